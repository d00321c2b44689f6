"""Waiting for processes under benchmark, reading their PVs and stopping them, shared by
the benchmarks."""

import signal
import subprocess
import time

from ptychoedge.apps.beamline import plain


def wait(condition, timeout: float, what: str):
    """Poll `condition` (errors count as not yet) until truthy; exit with a message if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise SystemExit(f"benchmark: timed out waiting for {what}")


def read(ctx, name: str):
    """The plain value of `name` (p4p), or None if it does not answer (searched afresh)."""
    try:
        return plain(ctx.get(name, timeout=2))
    except TimeoutError:
        ctx.disconnect(name)
        return None


def stop(children: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGINT every child, last started first; kill whichever is still running after
    `timeout`."""
    for child in reversed(children):
        child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
