"""A node agent on another host, as the supervisor sees it over pvAccess."""

from __future__ import annotations

import logging
import time

from ptychoedge.iocs.instances import Instance, InstanceSpec
from ptychoedge.pvdb import node, pipeline

log = logging.getLogger(__name__)

TIMEOUT = 0.5  # s for the agent to answer


class RemoteNode:
    """Puts the instances node `number` should run to its agent and reads back what it runs."""

    def __init__(self, number: int, pipeline_prefix: str, ctx):
        self.number = number
        self.pipeline_prefix = pipeline_prefix
        self.prefix = node.node_prefix(pipeline_prefix, number)
        self._ctx = ctx
        self.instances: dict[int, Instance] = {}
        self.up = False
        self.host = ""
        self.message = ""
        self.restarts = 0  # as its agent counts them
        self.lost_since: float | None = None  # when it stopped answering
        self._seen = False  # whether its agent ever answered
        self._spec: str | None = None  # what the agent runs, as it says

    def keep(self, spec: InstanceSpec | None) -> bool:
        """Ask the agent for `spec` (None: no instances); whether that started new ones."""
        wanted = spec.to_json() if spec is not None else ""
        ids = list(spec.ids) if spec is not None else []
        for consumer_id in [i for i in self.instances if i not in ids]:
            del self.instances[consumer_id]
        added = False
        for consumer_id in ids:
            instance = self.instances.get(consumer_id)
            if instance is None or instance.input_channel != spec.source:
                channels = pipeline.instance_channels(spec.prefix, consumer_id)
                self.instances[consumer_id] = Instance(
                    f"instance-{consumer_id}", channels["status"], channels["control"],
                    spec.source)
                added = True
        if self.up and self._spec != wanted:
            try:
                # as a field: p4p would read a bare string of JSON as the structure's fields
                self._ctx.put(self.prefix + node.SPEC.name, {"value": wanted}, timeout=2.0)
            except Exception as error:
                log.warning("%s: spec not taken: %s", self.prefix, error)
        return added

    def poll(self) -> None:
        names = [self.prefix + n for n in (node.SPEC.readback_name, "Host_RBV",
                                           "Restarts_RBV", "Message_RBV")]
        replies = self._ctx.get(names, timeout=TIMEOUT, throw=False)
        if any(isinstance(reply, Exception) for reply in replies):
            if self.up or not self._seen:
                self.lost_since = self.lost_since or time.monotonic()
            self.up = False
            for name in names:  # search afresh, not ever more rarely
                self._ctx.disconnect(name)
            return
        self._spec, self.host, self.restarts, self.message = (r["value"] for r in replies)
        self.up, self._seen, self.lost_since = True, True, None

    def describe(self) -> str:
        where = f"{self.prefix} on {self.host}" if self.host else self.prefix
        if self._seen:
            return f"node {self.number} ({where}) not answering"
        return (f"node {self.number}: no agent answers at {self.prefix} (run `ptychoedge node "
                f"--pipeline {self.pipeline_prefix} --node {self.number}` on that host)")
