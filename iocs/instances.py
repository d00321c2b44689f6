"""Inference instances on one host: `pvapy-hpc-consumer` processes kept as a spec asks.

The pipeline IOC keeps the instances of its own host with an `InstancePool`;
a node agent (`ptychoedge node`) keeps those of another host with one. Every
instance of a pipeline, on whatever host, joins one pvapy distributor group,
so the detector's server deals the frames out over all of them; the consumer
id of each is unique across hosts and names its channels.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptychoedge.iocs.processes import Child, stop_all
from ptychoedge.pvdb import pipeline
from ptychoedge.pvdb.processors import INSTANCE_PROCESSOR, InstanceArgs, ModelConfig

log = logging.getLogger(__name__)

REPORT_PERIOD = 0.5  # s between the children's own status updates
SERVER_QUEUE = 100  # frames pvAccess may hold for a slow instance
STOP_TIMEOUT = 10.0  # s an instance gets to finish its frames on SIGINT
CRASH_WINDOW = 60.0  # s: more than CRASH_LIMIT deaths in it and a child is left down
CRASH_LIMIT = 3
FIRST_DELAY = 1.0  # s a new instance holds its outputs, while the collector finds it


@dataclass(frozen=True)
class InstanceSpec:
    """The instances one host runs: consumer ids `first`, `first + step`, ... (`count` of them)."""

    prefix: str  # the pipeline's: it names the instances' channels
    source: str  # the channel the frames come from
    first: int = 1
    step: int = 1
    count: int = 0
    oid_offset: int = 1  # instances of the whole pipeline, for pvapy's own missed count
    config: ModelConfig = ModelConfig()

    @property
    def ids(self) -> range:
        return range(self.first, self.first + self.step * self.count, self.step)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> InstanceSpec:
        """The spec in `text`; ValueError saying what is wrong with it."""
        try:
            data = json.loads(text)
            config = ModelConfig(**data.pop("config"))
            spec = cls(config=config, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"not an instance spec: {error}") from error
        numbers = (spec.first, spec.step, spec.count, spec.oid_offset)
        if not all(isinstance(n, int) and n >= 0 for n in numbers) or spec.step < 1:
            raise ValueError("instance spec: ids and counts must be counts")
        if spec.count > pipeline.MAX_INSTANCES:
            raise ValueError(f"instance spec: at most {pipeline.MAX_INSTANCES} instances")
        if not all(isinstance(t, str) and t for t in (spec.prefix, spec.source)):
            raise ValueError("instance spec: channel names must be non-empty strings")
        if problem := config.problem():
            raise ValueError(f"instance spec: {problem}")
        return spec


def node_ids(total: int, nodes: int, number: int) -> range:
    """Consumer ids node `number` (1-based) of `nodes` runs, of the pipeline's `total`:
    interleaved (n, n + nodes, ...), so together the nodes run exactly 1..total and a
    node's count changes without renumbering another's."""
    return range(number, total + 1, nodes)


def group_name(prefix: str) -> str:
    """The distributor group of this pipeline: its instances share frames, others don't."""
    return "ptychoedge" + re.sub(r"[^A-Za-z0-9]", "", prefix)


@dataclass(frozen=True)
class Report:
    """One reading of a pvapy consumer's or collector's status channel.

    pvapy's own figures, and `user`: the processor's (pvdb/processors.py), None
    while it has reported none.
    """

    first_object_id: int  # the first frame id it took
    last_object_id: int  # the last
    last_object_time: float  # s since the epoch, when it took that one
    received: int  # objects its receiver got
    missed: int  # a collector's: ids it gave up waiting for
    rejected: int  # a collector's: objects that came after it gave up on them
    user: Any

    @classmethod
    def read(cls, value: Mapping[str, Any], user_status: Any) -> Report:
        """The report in a status channel's `value`, its `userStats` as `user_status`."""
        processed = value["processorStats"]
        collected = value.get("collectorStats", {})
        user = value.get("userStats") or None
        return cls(int(processed["firstObjectId"]), int(processed["lastObjectId"]),
                   float(processed["lastObjectTime"]),
                   int(value.get("receiverStats", {}).get("nReceived", 0)),
                   int(collected.get("nMissed", 0)), int(collected.get("nRejected", 0)),
                   user_status.from_stats(user) if user else None)


class Instance:
    """What the supervisor knows of one instance, wherever it runs."""

    def __init__(self, name: str, status: str, control: str, source: str):
        self.name = name
        self.status_channel = status
        self.control_channel = control
        self.input_channel = source
        self.reporting_since: float | None = None  # when its status first answered
        self.report: Report | None = None  # its latest status, None while it does not answer
        self.received = False  # whether its input ever sent it a frame

    def send(self, ctx: Any, command: str, args: Mapping[str, Any] | None = None) -> None:
        """Put `command` (a processor method: `configure`, `reset_stats`) to its control
        channel through the p4p context `ctx`; a failure is logged, not raised."""
        request = {"command": command, "args": json.dumps(dict(args or {}))}
        try:
            ctx.put(self.control_channel, request, timeout=2.0)
        except (TimeoutError, RuntimeError) as error:  # p4p's timeout, remote error, disconnect
            log.warning("%s: %s refused: %s", self.name, command, error)


class Supervised(Instance):
    """A child process of this host: an inference instance, the collector or a mirror."""

    def __init__(self, name: str, command: list[str], log_path: Path, status: str,
                 control: str, source: str = ""):
        super().__init__(name, status, control, source)
        self.command = command
        self.log_path = log_path
        self.child = Child(name, command, log_path)

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


@dataclass
class Deaths:
    """Deaths of children by name; a child dying too often is left down."""

    restarts: int = 0
    faulted: set[str] = field(default_factory=set)
    message: str = ""
    _times: dict[str, list[float]] = field(default_factory=dict)

    def died(self, child: Supervised) -> bool:
        """Count a death; whether the child may be started again."""
        now = time.monotonic()
        times = [t for t in self._times.get(child.name, []) if now - t < CRASH_WINDOW]
        times.append(now)
        self._times[child.name] = times
        code = child.child.returncode
        if len(times) > CRASH_LIMIT:
            self.faulted.add(child.name)
            self.message = (f"{child.name} died {len(times)} times in {CRASH_WINDOW:.0f} s "
                            f"(code {code}); left stopped: {child.log_tail(1)}")
            log.error(self.message)
            return False
        self.restarts += 1
        self.message = f"{child.name} died (code {code}) and was restarted"
        log.warning(self.message)
        return True

    def news(self) -> str:
        """The message of the deaths since the last call ("" if none)."""
        message, self.message = self.message, ""
        return message

    def clear(self) -> None:
        self.faulted.clear()
        self._times.clear()


def instance_command(spec: InstanceSpec, consumer_id: int,
                     model_dir: Path | None) -> list[str]:
    """The `pvapy-hpc-consumer` command line of instance `consumer_id` of `spec`."""
    channels = pipeline.instance_channels(spec.prefix, consumer_id)
    args = InstanceArgs(spec.config, str(model_dir or ""), first_delay=FIRST_DELAY)
    return ["pvapy-hpc-consumer", "--input-channel", spec.source,
            "--consumer-id", str(consumer_id), "--output-channel", channels["output"],
            "--status-channel", channels["status"], "--control-channel", channels["control"],
            "--processor-class", INSTANCE_PROCESSOR,
            "--processor-args", json.dumps(args.to_args()),
            "--distributor-group", group_name(spec.prefix), "--distributor-updates", "1",
            "--distributor-trigger", "uniqueId", "--oid-offset", str(spec.oid_offset),
            "--server-queue-size", str(SERVER_QUEUE),
            "--report-period", str(REPORT_PERIOD), "--disable-curses"]


class InstancePool:
    """The instances of one host. Call `keep` from one thread only: children die with it."""

    def __init__(self, log_dir: Path, model_dir: Path | None = None):
        self.log_dir = log_dir
        self.model_dir = model_dir
        self.instances: dict[int, Supervised] = {}
        self.deaths = Deaths()

    def keep(self, spec: InstanceSpec) -> list[int]:
        """Bring the running instances to `spec`; the consumer ids started anew."""
        for consumer_id, instance in list(self.instances.items()):
            if not instance.child.alive():
                instance.child.close()
                del self.instances[consumer_id]
                self.deaths.died(instance)
            else:
                instance.child.bound_log()  # it reports twice a second
        moved = [i for i, instance in self.instances.items()
                 if instance.input_channel != spec.source]
        if moved:
            log.info("instances now read %s: restarting them", spec.source)
        wanted = set(spec.ids) if spec.count else set()
        self.stop([i for i in self.instances if i not in wanted] + moved)
        started = []
        for consumer_id in spec.ids:
            name = f"instance-{consumer_id}"
            if consumer_id in self.instances or name in self.deaths.faulted:
                continue
            channels = pipeline.instance_channels(spec.prefix, consumer_id)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.instances[consumer_id] = Supervised(
                name, instance_command(spec, consumer_id, self.model_dir),
                self.log_dir / f"{name}.log", channels["status"], channels["control"],
                spec.source)
            started.append(consumer_id)
        return started

    def stop(self, consumer_ids: list[int]) -> None:
        """Stop instances gracefully: each finishes and publishes what it holds."""
        children = [self.instances.pop(i).child for i in consumer_ids if i in self.instances]
        stop_all(children, STOP_TIMEOUT)

    def stop_all(self) -> None:
        self.stop(list(self.instances))
        self.deaths.clear()
