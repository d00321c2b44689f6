"""The pipeline's inference instances on every node: this host's pool and the node agents.

Node 1 is this host (unless `local_node` is False); any other node `n` is the
host whose agent serves `$(P)Node<n>:`. Instances are numbered across nodes
(node n runs consumer ids n, n + Nodes, ...), so changing the count of one
node never renumbers another's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptychoedge.iocs.accounting import Counter
from ptychoedge.iocs.instances import Instance, InstancePool, InstanceSpec, node_ids
from ptychoedge.iocs.news import News
from ptychoedge.iocs.remote_node import RemoteNode
from ptychoedge.pvdb.processors import ModelConfig


class Fleet:
    """Keeps the instances the supervisor wants, spread over the nodes. One thread only:
    this host's instances die with the thread that started them."""

    def __init__(self, prefix: str, log_dir: Path, model_dir: Path | None, local_node: bool,
                 ctx: Any, news: News):
        self.prefix = prefix
        self.local_node = local_node
        self.news = news
        self.pool = InstancePool(log_dir, model_dir)
        self.nodes: dict[int, RemoteNode] = {}
        self.nodes_up = 0
        self._ctx = ctx
        self._restarts = Counter()  # as each node counts them

    @property
    def instances(self) -> dict[int, Instance]:
        """Every instance of the pipeline by consumer id, on whatever node."""
        found: dict[int, Instance] = dict(self.pool.instances)
        for remote in self.nodes.values():
            found.update(remote.instances)
        return found

    @property
    def faulted(self) -> set[str]:
        """This host's instances left down after dying too often."""
        return self.pool.deaths.faulted

    def remote_numbers(self, nodes: int) -> range:
        """The numbers of the nodes that node agents serve, of `nodes` in all."""
        return range(2 if self.local_node else 1, nodes + 1)

    def lost(self, nodes: int) -> list[RemoteNode]:
        """The nodes in use whose agents do not answer."""
        return [self.nodes[n] for n in self.remote_numbers(nodes) if not self.nodes[n].up]

    def poll(self, nodes: int, run: bool) -> None:
        """Read every node agent in use (and those still to be told to stop)."""
        for number in self.remote_numbers(nodes):
            if number not in self.nodes:
                self.nodes[number] = RemoteNode(number, self.prefix, self._ctx)
        for remote in self.nodes.values():
            remote.poll()
            restarted = self._restarts.add(remote.prefix, remote.restarts)
            if restarted > 0:
                self.news.restarted(restarted)
                self.news.hold_fault()
                self.news.say(f"node {remote.number}: {remote.message}")
        for number, remote in list(self.nodes.items()):
            if number not in self.remote_numbers(nodes) or not run:
                remote.keep(None)
                if number not in self.remote_numbers(nodes) and remote.up:
                    del self.nodes[number]
        self.nodes_up = int(self.local_node) + sum(
            self.nodes[n].up for n in self.remote_numbers(nodes))

    def keep(self, wanted: int, nodes: int, source: str, config: ModelConfig) -> bool:
        """Run `wanted` instances over `nodes` nodes, reading `source` and starting with
        `config`; whether any started anew."""
        started = []
        if self.local_node:
            started = self.pool.keep(self._node_spec(1, wanted, nodes, source, config))
            self.news.restarted(self._restarts.add("local", self.pool.deaths.restarts))
            if deaths := self.pool.deaths.news():
                self.news.say(deaths)
                self.news.hold_fault()
        for number in self.remote_numbers(nodes):
            if self.nodes[number].keep(self._node_spec(number, wanted, nodes, source, config)):
                started.append(number)
        return bool(started)

    def stop(self) -> None:
        """Stop every instance, gracefully: each finishes and publishes what it holds."""
        self.pool.stop_all()
        for remote in self.nodes.values():
            remote.keep(None)

    def _node_spec(self, number: int, wanted: int, nodes: int, source: str,
                   config: ModelConfig) -> InstanceSpec:
        """The instances node `number` runs: its share of the pipeline's, ids interleaved."""
        ids = node_ids(wanted, nodes, number)
        return InstanceSpec(prefix=self.prefix, source=source, first=number, step=nodes,
                            count=len(ids), oid_offset=wanted, config=config)
