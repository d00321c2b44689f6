"""The supervisor: runs the inference instances and the mosaic collector the knobs ask for.

It is a client like any other: it starts `pvapy-hpc-consumer` instances (the
pvapy distributor shares the detector's frames out over them) and one
`pvapy-hpc-collector`, reads their status channels once a second over
pvAccess, changes their configuration through their control channels, and
restarts whichever dies. What it measured goes to `publish` as a `Status`.

Frames are counted as DESIGN.md asks: a frame is delivered only when its
reconstruction was published. Lost frames are the gaps in the `uniqueId`
sequence that reaches the collector (less those that only came late); the
backlog is what the detector produced that no instance has taken or finished.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from p4p.client.thread import Context

import ptychoedge.inference as inference_package
from ptychoedge.iocs.accounting import Counter, RefusedFrames
from ptychoedge.iocs.autoscaler import Autoscaler, Observation
from ptychoedge.iocs.instances import (
    FIRST_DELAY,
    REPORT_PERIOD,
    SERVER_QUEUE,
    STOP_TIMEOUT,
    Deaths,
    Instance,
    InstancePool,
    InstanceSpec,
    ModelConfig,
    Supervised,
    node_ids,
)
from ptychoedge.iocs.processes import python_module, stop_all
from ptychoedge.iocs.remote_node import RemoteNode
from ptychoedge.iocs.residual_guard import ResidualGuard, model_limits
from ptychoedge.pvdb import pipeline

log = logging.getLogger(__name__)

PERIOD = 1.0  # s between status updates
RESEND_AFTER = 5.0  # s before an unconfirmed configuration is sent again
DISTRIBUTION_GRACE = 5.0  # s from an instance's first report to the input's first value
SETTLE = FIRST_DELAY + 3.0  # s after a scaling step before the autoscaler looks again
FAULT_HOLD = 5.0  # s a restart keeps the state at Fault
MOSAIC_FILE = Path(inference_package.__file__).with_name("mosaic_processor.py")
SHIPPED_MODELS = Path(inference_package.__file__).with_name("models")  # manifest.MODEL_DIR


@dataclass(frozen=True)
class Settings:
    run: bool = False
    input_channel: str = "SIM1:Pva1:Image"
    nodes: int = 1
    instances: int = 1  # on each node
    config: ModelConfig = ModelConfig()
    auto_scale: bool = False
    target_rate: float = 0.0
    max_instances: int = 8


@dataclass
class Status:
    state: str = "Idle"
    message: str = ""
    input_rate: float = 0.0
    processed_rate: float = 0.0
    frames_processed: int = 0
    frames_missed: int = 0
    missed_rate: float = 0.0
    backlog: int = 0
    frame_errors: int = 0
    latency_p50: float = 0.0  # ms
    latency_p99: float = 0.0  # ms
    inference_time: float = 0.0  # ms per frame
    residual: float = 0.0
    residual_severity: int = 0  # the residual guard's alarm: 0 none, 1 MINOR, 2 MAJOR
    instances: int = 0
    nodes_up: int = 0
    instance_rates: list[float] = field(default_factory=list)
    restarts: int = 0
    wanted_instances: int = 0
    config: ModelConfig = ModelConfig()  # what the instances run


@dataclass(frozen=True)
class Refusal:
    """A configuration the instances refused, and the one that stays in force."""

    refused: ModelConfig
    in_force: ModelConfig
    reason: str

    @property
    def message(self) -> str:
        kept = self.in_force
        return (f"refused: {self.reason}; still running {kept.model} on {kept.backend} "
                f"{kept.precision}, batch {kept.batch_size}")


class Supervisor:
    """Keeps the pipeline the knobs ask for: instances on every node, the collector, a mirror,
    and the image relay that serves the pipeline's images for as long as the IOC runs.

    Node 1 is this host (unless `local_node` is False); any other node `n` is the
    host whose agent serves `$(P)Node<n>:`. Instances are numbered across nodes
    (node n runs consumer ids n, n + Nodes, ...), so changing the count of one
    node never renumbers another's.
    """

    def __init__(self, prefix: str, log_dir: Path, publish: Callable[[Status], None],
                 refused: Callable[[Refusal], None], model_dir: Path | None = None,
                 local_node: bool = True):
        self.prefix = prefix
        self.log_dir = log_dir
        self.publish = publish
        self.refused = refused
        self.model_dir = model_dir
        self.local_node = local_node
        self.settings = Settings()
        self.status = Status()
        self.autoscaler = Autoscaler()
        self._residual_guard = ResidualGuard()
        self._model_limits: dict[str, tuple] = {}  # model -> its residual limits, typical
        self.pool = InstancePool(log_dir, model_dir)
        self.nodes: dict[int, RemoteNode] = {}
        self.collector: Supervised | None = None
        self.mirror: Supervised | None = None
        self.relay: Supervised | None = None  # serves the images while the IOC runs
        self._mirrored: str | None = None  # the input channel a mirror serves again
        # What the instances were last confirmed to run; new instances start with it,
        # then get the knobs' configuration, so a bad one is refused, not fatal.
        self.config = ModelConfig()
        self._wanted = 1  # instances to run, over all nodes
        self._deaths = Deaths()  # of the collector, the mirror and the image relay
        self._fault_until = 0.0
        self._settle_until = 0.0
        self._last_input: tuple[float, int] | None = None
        self._input_missing = False
        self._last_measured = 0.0
        self._pending: ModelConfig | None = None  # sent to the instances, not yet confirmed
        self._request = 0  # number of the last configuration request sent
        self._pending_since = 0.0
        self._observation: Observation | None = None
        self._processed = Counter()
        self._missed = Counter()
        self._late = Counter()
        self._errors = Counter()
        self._received = Counter()  # outputs the collector received
        self._collector_model = ""  # the model on the running collector's command line
        self._collector_told_at = 0.0  # when it was last told another model
        self._collected_to = 0  # the last id the collector took
        self._restart_gap_from: int | None = None  # its last id, when it died
        self._restart_gaps = 0  # ids between a dead collector's last and its successor's first
        self._refused_frames = RefusedFrames()
        self._node_restarts = Counter()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._reset_requested = False
        self._ctx = Context("pva", nt=False)
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    @property
    def instances(self) -> dict[int, Instance]:
        """Every instance of the pipeline by consumer id, on whatever node."""
        found: dict[int, Instance] = dict(self.pool.instances)
        for remote in self.nodes.values():
            found.update(remote.instances)
        return found

    # -- what the IOC calls --------------------------------------------------------

    def start(self, settings: Settings) -> None:
        self.settings = settings
        self._wanted = settings.instances * settings.nodes
        self._thread.start()

    def change(self, **changes) -> None:
        """Apply knob changes (fields of Settings, or `config` fields by name)."""
        with self._lock:
            config_fields = {k: changes.pop(k) for k in list(changes)
                             if k in ModelConfig.__dataclass_fields__}
            settings = replace(self.settings, **changes)
            if config_fields:
                settings = replace(settings, config=replace(settings.config, **config_fields))
                self._pending = None  # sent afresh, even if refused before
            if "auto_scale" in changes:
                self.autoscaler.reset()
            if changes.keys() & {"instances", "nodes", "auto_scale"} and not settings.auto_scale:
                self._wanted = settings.instances * settings.nodes
            self.settings = settings
        self._wake.set()

    def reset_stats(self) -> None:
        with self._lock:
            self._reset_requested = True
        self._wake.set()

    def close(self) -> None:
        self._quit.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT + 10)
        self._stop_everything()
        self._ctx.close()

    # -- the loop ------------------------------------------------------------------
    # Children are started only on this thread: they die with the thread that made them.

    def _run(self) -> None:
        while not self._quit.is_set():
            began = time.monotonic()
            try:
                self._tick()
            except Exception:
                log.exception("supervisor step failed")
            self._wake.wait(max(0.0, PERIOD - (time.monotonic() - began)))
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            settings = self.settings
            reset, self._reset_requested = self._reset_requested, False
        self.autoscaler.max_instances = settings.max_instances
        self.autoscaler.target_rate = settings.target_rate
        if reset:
            self._reset()
        self._poll_nodes(settings)
        if not settings.run:
            if self.instances or self.collector:
                self._stop_pipeline()
                self.status.message = "stopped"
            self._keep_relay()
            self._last_input = None
            self.status.state = "Idle"
            self.status.instances = 0
            self.status.instance_rates = []
            self.status.wanted_instances = self._wanted
            self.status.config = settings.config  # what Run will bring
            self.publish(self.status)
            return
        self._wanted = max(1, min(self._wanted, settings.max_instances))
        self._keep_relay()
        self._keep_collector(settings)
        self._keep_mirror(settings)
        self._keep_instances(settings)
        self._measure(settings)
        self._push_config(settings)
        if settings.auto_scale:
            self._autoscale()
        self.status.state = self._state()
        self._guard_residual()
        self.status.wanted_instances = self._wanted
        self.status.config = self.config
        self.publish(self.status)

    def _guard_residual(self) -> None:
        model = self.config.model
        if model not in self._model_limits:
            self._model_limits[model] = model_limits(self.model_dir or SHIPPED_MODELS, model)
        limits, typical = self._model_limits[model]
        verdict = self._residual_guard.judge(self.status.residual, limits, typical, model,
                                             time.monotonic())
        self.status.residual_severity = verdict.severity
        if verdict.misfit and self.status.state == "Running":
            self.status.state = "Misfit"
            self.status.message = verdict.message

    # -- children ------------------------------------------------------------------

    def _keep_collector(self, settings: Settings) -> None:
        """The collector: restarted when it dies (its gap in the ids then counts as missed)
        or the instances' count range grows; told a new model through its control channel,
        so a model change starts a new mosaic and loses nothing."""
        running = self.collector
        alive = running is not None and running.child.alive()
        model = self._collector_model if alive else self.config.model
        self.collector = self._keep(running, "collector",
                                    self._collector_command(settings, model),
                                    pipeline.collector_channels(self.prefix))
        if self.collector is not running:
            self._collector_model = model
            if running is not None:
                self._restart_gap_from = self._collected_to
        stats = self.collector.stats.get("userStats", {}) if self.collector else {}
        now = time.monotonic()
        if (stats and stats["model"] != self.config.model
                and now - self._collector_told_at > RESEND_AFTER):
            self._control(self.collector, "configure", {"model": self.config.model})
            self._collector_told_at = now

    def _keep_relay(self) -> None:
        """The image relay: the pipeline's images exist while the IOC runs, Run or not."""
        self.relay = self._keep(self.relay, "image-relay", python_module(
            "ptychoedge.iocs.image_relay", "--prefix", self.prefix),
            {"status": self.prefix + pipeline.IMAGES[-1], "control": ""})

    def _collector_command(self, settings: Settings, model: str) -> list[str]:
        channels = pipeline.collector_channels(self.prefix)
        args = {"prefix": channels["images"], "model": model}
        if self.model_dir is not None:
            args["modelDir"] = str(self.model_dir)
        return ["pvapy-hpc-collector", "--input-channel", channels["input"],
                "--producer-id-list", f"range(1,{settings.max_instances + 1})",
                "--status-channel", channels["status"], "--control-channel", channels["control"],
                "--processor-file", str(MOSAIC_FILE), "--processor-class", "MosaicProcessor",
                "--processor-args", json.dumps(args),
                "--server-queue-size", str(SERVER_QUEUE),
                # what a channel sends on connecting never gets to the processor
                # (mosaic_processor.Receipts): nothing initial to skip
                "--skip-initial-updates", "0",
                "--report-period", str(REPORT_PERIOD), "--disable-curses"]

    def _died(self, child: Supervised) -> bool:
        """Count the death of the collector or mirror and show it; whether it may start again."""
        restart = self._deaths.died(child)
        self.status.message = self._deaths.news()
        if restart:
            self.status.restarts += 1
            self._fault_until = time.monotonic() + FAULT_HOLD
        return restart

    def _keep(self, child: Supervised | None, name: str, command: list[str],
              channels: dict[str, str]) -> Supervised | None:
        """The running child `name`: restarted if it died or its command line changed."""
        if child is not None and not child.child.alive():
            child.child.close()
            restart = self._died(child)
            child = None
            if not restart:
                return None
        if child is not None and child.command != command:
            stop_all([child.child], STOP_TIMEOUT)
            child = None
        if child is None and name not in self._deaths.faulted:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            child = Supervised(name, command, self.log_dir / f"{name}.log", channels["status"],
                               channels["control"])
        if child is not None:
            child.child.bound_log()  # the collector reports twice a second
        return child

    def _keep_mirror(self, settings: Settings) -> None:
        """A pvapy mirror in front of an input channel whose server cannot distribute."""
        if self.mirror is not None and self._mirrored != settings.input_channel:
            stop_all([self.mirror.child], STOP_TIMEOUT)
            self.mirror = None
        if self._mirrored == settings.input_channel:
            mirror = pipeline.mirror_channel(self.prefix)
            self.mirror = self._keep(self.mirror, "mirror", [
                "pvapy-mirror-server", "--channel-map",
                f"({mirror},{settings.input_channel},pva,{SERVER_QUEUE})"],
                {"status": mirror, "control": ""})
        else:
            self._mirrored = None

    def _source(self, settings: Settings) -> str:
        """The channel the instances read: the input, or its mirror."""
        if self._mirrored == settings.input_channel:
            return pipeline.mirror_channel(self.prefix)
        return settings.input_channel

    def _node_spec(self, number: int, settings: Settings) -> InstanceSpec:
        """The instances node `number` runs: its share of the pipeline's, ids interleaved."""
        ids = node_ids(self._wanted, settings.nodes, number)
        return InstanceSpec(prefix=self.prefix, source=self._source(settings), first=number,
                            step=settings.nodes, count=len(ids), oid_offset=self._wanted,
                            config=self.config)

    def _remote_numbers(self, settings: Settings) -> range:
        return range(2 if self.local_node else 1, settings.nodes + 1)

    def _poll_nodes(self, settings: Settings) -> None:
        """Read every node agent in use (and those still to be told to stop)."""
        for number in self._remote_numbers(settings):
            if number not in self.nodes:
                self.nodes[number] = RemoteNode(number, self.prefix, self._ctx)
        for remote in self.nodes.values():
            remote.poll()
            restarted = self._node_restarts.add(remote.prefix, remote.restarts)
            if restarted > 0:
                self.status.restarts += restarted
                self._fault_until = time.monotonic() + FAULT_HOLD
                self.status.message = f"node {remote.number}: {remote.message}"
        for number, remote in list(self.nodes.items()):
            if number not in self._remote_numbers(settings) or not settings.run:
                remote.keep(None)
                if number not in self._remote_numbers(settings) and remote.up:
                    del self.nodes[number]
        self.status.nodes_up = int(self.local_node) + sum(
            self.nodes[n].up for n in self._remote_numbers(settings))

    def _keep_instances(self, settings: Settings) -> None:
        started = []
        if self.local_node:
            started = self.pool.keep(self._node_spec(1, settings))
            self.status.restarts += self._node_restarts.add("local", self.pool.deaths.restarts)
            if deaths := self.pool.deaths.news():
                self.status.message = deaths
                self._fault_until = time.monotonic() + FAULT_HOLD
        for number in self._remote_numbers(settings):
            if self.nodes[number].keep(self._node_spec(number, settings)):
                started.append(number)
        if started:
            # a new instance holds its first outputs: judge the pipeline after that
            self._settle_until = time.monotonic() + SETTLE

    def _stop_pipeline(self) -> None:
        """Stop all but the image relay; a child left down may start again at Run."""
        self.pool.stop_all()
        for remote in self.nodes.values():
            remote.keep(None)
        for child in (self.collector, self.mirror):
            if child is not None:
                stop_all([child.child], STOP_TIMEOUT)
        self.collector = self.mirror = None
        self._deaths.clear()

    def _stop_everything(self) -> None:
        self._stop_pipeline()
        if self.relay is not None:
            stop_all([self.relay.child], STOP_TIMEOUT)
            self.relay = None

    def _control(self, child: Instance, command: str, args: dict | None = None) -> None:
        request = {"command": command, "args": json.dumps(args or {})}
        try:
            self._ctx.put(child.control_channel, request, timeout=2.0)
        except Exception as error:
            log.warning("%s: %s refused: %s", child.name, command, error)

    # -- measuring -----------------------------------------------------------------

    def _read_statuses(self) -> None:
        children = [*self.instances.values(), *([self.collector] if self.collector else [])]
        replies = self._ctx.get([c.status_channel for c in children], timeout=0.5, throw=False)
        for child, reply in zip(children, replies, strict=True):
            if isinstance(reply, Exception):
                child.stats = {}
                # A channel searched for before its server started is searched for
                # ever more rarely: search afresh while the child comes up.
                self._ctx.disconnect(child.status_channel)
                continue
            child.stats = reply.todict()
            if child.reporting_since is None:
                child.reporting_since = time.monotonic()

    def _input_id(self, channel: str) -> int | None:
        try:
            return int(self._ctx.get(channel, request="field(uniqueId)",
                                     timeout=0.5)["uniqueId"])
        except Exception:
            return None

    def _measure(self, settings: Settings) -> None:
        now = time.monotonic()
        period = now - self._last_measured if self._last_measured else PERIOD
        self._last_measured = now
        self._read_statuses()
        status = self.status
        unique_id = self._input_id(settings.input_channel)
        if unique_id is None:
            status.input_rate = 0.0
            self._input_missing = True
        else:
            self._input_missing = False
            self._check_distribution(settings)
            if self._last_input is not None and unique_id >= self._last_input[1]:
                status.input_rate = (unique_id - self._last_input[1]) / (now - self._last_input[0])
            else:
                status.input_rate = 0.0
            self._last_input = (now, unique_id)

        instances = self.instances
        ready = [i for i in instances.values() if i.stats]
        rates, busy, processed_now, last_taken, queued, refused_now = [], 0.0, 0, 0, 0, 0
        for index in range(1, max(instances, default=0) + 1):
            instance = instances.get(index)
            user = instance.stats.get("userStats", {}) if instance else {}
            if not user:
                rates.append(0.0)
                continue
            added = self._processed.add(instance.name, int(user["published"]))
            rate = added / period
            rates.append(rate)
            processed_now += added
            busy += rate * float(user["inferenceTime"])
            queued += int(user["queued"])
            refused_now += self._errors.add(instance.name, int(user["errors"]))
            # The status is up to a report period old: what the instance would have
            # taken by now, had it kept up, is compared with the detector's count.
            taken = instance.stats["processorStats"]
            age = max(0.0, time.time() - float(taken["lastObjectTime"]))
            last_taken = max(last_taken,
                             int(taken["lastObjectId"] + status.input_rate * age))
        status.instance_rates = rates
        status.instances = len(ready)
        status.processed_rate = processed_now / period
        status.frame_errors = self._errors.total
        users = [i.stats["userStats"] for i in ready]
        if users:
            status.latency_p50 = 1e3 * max(float(u["latencyP50"]) for u in users)
            status.latency_p99 = 1e3 * max(float(u["latencyP99"]) for u in users)
            status.inference_time = 1e3 * sum(float(u["inferenceTime"]) for u in users) / len(users)
            status.residual = sum(float(u["residualMean"]) for u in users) / len(users)
        waiting = max(0, unique_id - last_taken) if unique_id and last_taken else 0
        status.backlog = waiting + queued
        missed_now, collected_to = 0, None
        if self.collector is not None and self.collector.stats:
            counts = self.collector.stats["collectorStats"]
            # frames the collector gave up waiting for, less those that came late after all
            missed_now = (self._missed.add("collector", int(counts["nMissed"]))
                          - self._late.add("collector", int(counts["nRejected"])))
            self._received.add("collector",
                               int(self.collector.stats["userStats"].get("received", 0)))
            processed = self.collector.stats["processorStats"]
            collected_to = self._collected_to = int(processed["lastObjectId"])
            first = int(processed["firstObjectId"])
            if self._restart_gap_from is not None and first:
                self._restart_gaps += max(0, first - self._restart_gap_from - 1)
                self._restart_gap_from = None
        # An instance that dies takes the count of its last outputs with it: a frame is
        # delivered when its instance reported it published or the collector received it.
        status.frames_processed = max(self._processed.total, self._received.total)
        # a frame an instance refused is an error, not a lost frame, though it leaves a gap
        known = self._last_input[1] if self._last_input else 1 << 62
        self._refused_frames.refused(now, unique_id or known, refused_now)
        lost_now = self._refused_frames.lost(now, max(0, missed_now), collected_to)
        status.frames_missed = max(0, self._missed.total - self._late.total
                                   - self._refused_frames.gaps) + self._restart_gaps
        status.missed_rate = lost_now / period
        self._observation = Observation(
            input_rate=status.input_rate, processed_rate=status.processed_rate,
            missed=lost_now, backlog=status.backlog, instances=status.instances,
            busy=busy, frame_time=status.inference_time / 1e3)

    def _check_distribution(self, settings: Settings) -> None:
        """Mirror the input if its server refused the instances' distributor monitors.

        A pvDatabase server sends a new monitor its current value at once; a server
        without the pvapy distributor (p4p, pvxs, a CA gateway) sends nothing to a
        monitor that asks for it.
        """
        if self._mirrored == settings.input_channel:
            return
        for instance in self.instances.values():  # a restarted input reads 0 again
            if instance.stats and int(instance.stats["receiverStats"]["nReceived"]) > 0:
                instance.received = True
        refused = [i for i in self.instances.values() if i.stats and not i.received
                   and time.monotonic() - i.reporting_since > DISTRIBUTION_GRACE
                   and int(i.stats["receiverStats"]["nReceived"]) == 0]
        if refused and len(refused) == len(self.instances):
            self._mirrored = settings.input_channel
            self.status.message = (f"{settings.input_channel} cannot share frames out (its "
                                   "server has no pvapy distributor): mirroring it to "
                                   f"{pipeline.mirror_channel(self.prefix)}")
            log.warning(self.status.message)

    def _reset(self) -> None:
        for counter in (self._processed, self._missed, self._late, self._errors,
                        self._received):
            counter.reset()
        self._refused_frames.reset()
        self._restart_gaps = 0
        self.status.restarts = 0
        self.status.frames_missed = self.status.frames_processed = 0
        for child in [*self.instances.values(), *([self.collector] if self.collector else [])]:
            self._control(child, "reset_stats")
        self.status.message = "statistics reset"

    # -- configuration and scaling -------------------------------------------------

    def _push_config(self, settings: Settings) -> None:
        """Bring the running instances to the configuration the knobs ask for."""
        wanted = settings.config
        instances = [i for i in self.instances.values() if i.stats]
        if not instances:
            return
        reports = [i.stats["userStats"] for i in instances]
        applied = [ModelConfig(r["model"], r["backend"], r["precision"], int(r["batchSize"]))
                   for r in reports]
        if all(config == wanted for config in applied):
            if self.config != wanted:
                self.config = wanted
                self.status.message = (f"now running {wanted.model} on {wanted.backend} "
                                       f"{wanted.precision}, batch {wanted.batch_size}")
                log.info(self.status.message)
            return
        # only the instances' answers to the latest request count: no earlier refusal
        errors = {r["configError"] for r in reports
                  if int(r["answered"]) == self._request and r["configError"]}
        if self._pending == wanted and errors:
            self._refuse(wanted, sorted(errors)[0])
            return
        # Sent again after a while: an instance still starting up may not have heard it.
        if self._pending != wanted or time.monotonic() - self._pending_since > RESEND_AFTER:
            self._request += 1
            for instance, config in zip(instances, applied, strict=True):
                if config != wanted:
                    self._control(instance, "configure",
                                  {**wanted.processor_args(), "request": self._request})
            self._pending, self._pending_since = wanted, time.monotonic()

    def _refuse(self, wanted: ModelConfig, reason: str) -> None:
        """Go back to the configuration in force: a refused one is not sent again with the
        next change (a later put changes the knobs from the one in force)."""
        with self._lock:
            if self.settings.config == wanted:  # no put since: else that one is sent next
                self.settings = replace(self.settings, config=self.config)
        self._pending = None
        refusal = Refusal(wanted, self.config, reason)
        log.warning("%s", refusal.message)
        self.refused(refusal)

    def _autoscale(self) -> None:
        now = time.monotonic()
        ready = len([i for i in self.instances.values() if i.stats])
        if ready != self._wanted or now < self._settle_until or self._observation is None:
            return  # the instances are still coming up: what they show says little yet
        decision = self.autoscaler.decide(now, self._observation)
        if decision.instances != self._wanted:
            self._wanted = decision.instances
            self._settle_until = now + SETTLE
            self.status.message = decision.reason
            log.info("autoscaler: %s", decision.reason)
        elif self._state() == "Running":
            self.status.message = decision.reason

    def _state(self) -> str:
        now = time.monotonic()
        faulted = self._deaths.faulted | self.pool.deaths.faulted
        lost = [self.nodes[n] for n in self._remote_numbers(self.settings)
                if not self.nodes[n].up]
        if lost:
            self.status.message = (f"{'; '.join(node.describe() for node in lost)}: its "
                                   f"frames are lost; {self.status.nodes_up} of "
                                   f"{self.settings.nodes} nodes carry on")
        elif self._input_missing and not faulted:
            self.status.message = f"input channel {self.settings.input_channel} not answering"
        if faulted or lost or now < self._fault_until or self._input_missing:
            return "Fault"
        instances = self.instances
        ready = len([i for i in instances.values() if i.stats])
        source = self._source(self.settings)
        if not ready or any(i.input_channel != source for i in instances.values()):
            return "Starting"
        if ready != self._wanted or len(instances) != self._wanted:
            return "Scaling"
        return "Running"
