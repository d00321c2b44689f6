"""Hosts on one machine: network namespaces joined by veth pairs to one bridge.

Each host has its own address and sees the others as over a real network: EPICS
name searches go out as broadcasts on the bridge, connections are TCP between
addresses. Cutting a host takes its link down, as a pulled cable would. Needs
root (CAP_NET_ADMIN); `available()` says whether this machine allows it.
"""

from __future__ import annotations

import secrets
import subprocess

SUBNET = "10.251.{net}.{host}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def available() -> bool:
    """Whether this machine lets us make namespaces and bridges (root, iproute2)."""
    probe = f"pe{secrets.token_hex(3)}"
    try:
        made = [_ip("netns", "add", probe, check=False).returncode == 0,
                _ip("link", "add", probe, "type", "bridge", check=False).returncode == 0]
    except FileNotFoundError:  # no `ip` command
        return False
    _ip("netns", "del", probe, check=False)
    _ip("link", "del", probe, check=False)
    return all(made)


class Network:
    """A bridge in this namespace and one namespace per host, all on one /24."""

    def __init__(self, hosts: list[str]):
        self.tag = secrets.token_hex(2)
        self.net = 64 + secrets.randbelow(128)
        self.bridge = f"pe{self.tag}br"
        self.namespaces: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        self._links: dict[str, str] = {}
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{SUBNET.format(net=self.net, host=1)}/24", "brd", "+",
                "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for number, host in enumerate(hosts, start=2):
                self._add_host(host, number)
        except Exception:
            self.close()
            raise

    def _add_host(self, host: str, number: int) -> None:
        namespace, outside = f"pe{self.tag}{host}", f"pe{self.tag}{number}"
        address = SUBNET.format(net=self.net, host=number)
        _ip("netns", "add", namespace)
        self.namespaces[host] = namespace
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._links[host] = outside
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        inside = ["netns", "exec", namespace, "ip"]
        _ip(*inside, "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "link", "set", "lo", "up")
        self.addresses[host] = address

    def command(self, host: str, args: list[str]) -> list[str]:
        """`args` run on `host`."""
        return ["ip", "netns", "exec", self.namespaces[host], *args]

    def sysctl(self, host: str, key: str, value: object) -> None:
        """Set a kernel setting of `host`'s network stack (its own, as on a real host)."""
        subprocess.run(self.command(host, ["sysctl", "-q", "-w", f"{key}={value}"]), check=True)

    def cut(self, host: str) -> None:
        """Take the host off the network: its processes run on, unreachable."""
        _ip("link", "set", self._links[host], "down")

    def close(self) -> None:
        for namespace in self.namespaces.values():
            _ip("netns", "del", namespace, check=False)  # its veth ends go with it
        _ip("link", "del", self.bridge, check=False)
