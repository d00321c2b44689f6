"""The supervisor: runs the inference instances and the mosaic collector the knobs ask for.

It is a client like any other: it starts `pvapy-hpc-consumer` instances (the
pvapy distributor shares the detector's frames out over them) and one
`pvapy-hpc-collector`, reads their status channels once a second over
pvAccess, changes their configuration through their control channels, and
restarts whichever dies. What it measured goes to `publish` as a `Status`.

It composes parts with one job each, all driven from its one thread:

- `Fleet` (fleet.py): the instances on every node, this host's and the agents';
- `Children` (children.py): the collector, a mirror for an input that cannot
  share frames out, the image relay;
- `Meter` (meter.py): rates, counts, backlog and losses from the status channels;
- `Rollout` (rollout.py): the knobs' configuration to the running instances;
- `Autoscaler` (autoscaler.py) and `FitGuard` (fit_guard.py): policy;
- `Adaptation` (adaptation.py): the frame ring's scan, the trainer child, the swap;
- `Refinement` (refinement.py): the frame ring's scan, refined by the refiner child;
- `News` (news.py): the message, restarts and faults the parts report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from p4p.client.thread import Context

import ptychoedge.inference as inference_package
from ptychoedge.iocs.adaptation import Adaptation, AdaptStatus
from ptychoedge.iocs.autoscaler import Autoscaler
from ptychoedge.iocs.children import Children
from ptychoedge.iocs.fit_guard import FitGuard, model_limits
from ptychoedge.iocs.fleet import Fleet
from ptychoedge.iocs.instances import FIRST_DELAY, STOP_TIMEOUT
from ptychoedge.iocs.meter import Figures, Meter
from ptychoedge.iocs.news import News
from ptychoedge.iocs.refinement import Refinement, RefineStatus
from ptychoedge.iocs.ring_client import RingClient
from ptychoedge.iocs.rollout import Rollout, collector_model
from ptychoedge.iocs.settings import Settings
from ptychoedge.pvdb import pipeline
from ptychoedge.pvdb.processors import ModelConfig

log = logging.getLogger(__name__)

PERIOD = 1.0  # s between status updates
SETTLE = FIRST_DELAY + 3.0  # s after a scaling step before the autoscaler looks again
SHIPPED_MODELS = Path(inference_package.__file__).with_name("models")  # manifest.MODEL_DIR


@dataclass
class Status(Figures):
    """What the pipeline does, for the status PVs: the meter's figures and the state."""

    state: str = "Idle"
    message: str = ""
    residual_severity: int = 0  # the fit guard's alarm on the residual: 0 none, 1 MINOR, 2 MAJOR
    one_answer: bool = False  # the fit guard's: the answers explain too little (MINOR)
    disagree: bool = False  # the fit guard's: neighbouring images disagree (MINOR)
    nodes_up: int = 0
    restarts: int = 0
    wanted_instances: int = 0
    config: ModelConfig = field(default_factory=ModelConfig)  # what the instances run
    adapt: AdaptStatus = field(default_factory=AdaptStatus)
    refine: RefineStatus = field(default_factory=RefineStatus)


@dataclass(frozen=True)
class Refusal:
    """A configuration the instances refused, and the one that stays in force."""

    refused: ModelConfig
    in_force: ModelConfig
    reason: str

    @property
    def message(self) -> str:
        """What the operator reads: why, and what still runs."""
        kept = self.in_force
        return (f"refused: {self.reason}; still running {kept.model} on {kept.backend} "
                f"{kept.precision}, batch {kept.batch_size}")


class Supervisor:
    """Keeps the pipeline the knobs ask for: instances on every node, the collector, a mirror,
    and the image relay that serves the pipeline's images for as long as the IOC runs."""

    def __init__(self, prefix: str, log_dir: Path, publish: Callable[[Status], None],
                 refused: Callable[[Refusal], None], model_dir: Path | None = None,
                 local_node: bool = True):
        self.prefix = prefix
        self.publish = publish
        self.refused = refused
        self.model_dir = model_dir
        self.settings = Settings()
        self.status = Status()
        self.autoscaler = Autoscaler()
        self._ctx = Context("pva", nt=False)
        self.news = News()
        self.fleet = Fleet(prefix, log_dir, model_dir, local_node, self._ctx, self.news)
        self.children = Children(prefix, log_dir, model_dir, self.news)
        self.meter = Meter(self._ctx)
        self.rollout = Rollout(self._ctx)
        ring = RingClient(self._ctx, pipeline.ring_channel(prefix))
        self.adaptation = Adaptation(ring, log_dir / "adapt", model_dir, self.news)
        self.refinement = Refinement(prefix, ring, log_dir / "refine", model_dir, self.news)
        self._fit_guard = FitGuard()
        self._model_limits: dict[str, tuple] = {}  # model -> its residual limits, typical
        self._wanted = 1  # instances to run, over all nodes
        self._settle_until = 0.0
        self._lock = threading.Lock()  # guards `settings` and `_reset_requested`
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._reset_requested = False
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    # -- what the IOC calls --------------------------------------------------------

    def start(self, settings: Settings) -> None:
        """Start supervising, from the knobs' values."""
        self.settings = settings
        self._wanted = settings.instances * settings.nodes
        self._thread.start()

    def change(self, **changes) -> None:
        """Apply knob changes (fields of Settings, or `config` fields by name)."""
        with self._lock:
            settings = self.settings.changed(**changes)
            if changes.keys() & ModelConfig.__dataclass_fields__.keys():
                self.rollout.forget()  # sent afresh, even if refused before
            if "auto_scale" in changes:
                self.autoscaler.reset()
            if changes.keys() & {"instances", "nodes", "auto_scale"} and not settings.auto_scale:
                self._wanted = settings.instances * settings.nodes
            self.settings = settings
        self._wake.set()

    def adapt(self) -> None:
        """Fine-tune the running model on the frames kept (the Adapt button)."""
        self.adaptation.request()
        self._wake.set()

    def refine(self) -> None:
        """Refine the image of the frames kept through the physics (the Refine button)."""
        self.refinement.request()
        self._wake.set()

    def reset_stats(self) -> None:
        """Zero the counters, here and in every child."""
        with self._lock:
            self._reset_requested = True
        self._wake.set()

    def close(self) -> None:
        """Stop supervising and stop every child."""
        self._quit.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT + 10)
        self.adaptation.stop()
        self.refinement.stop()
        self.fleet.stop()
        self.children.stop_all()
        self._ctx.close()

    # -- the loop ------------------------------------------------------------------
    # Children are started only on this thread: they die with the thread that made them.

    def _run(self) -> None:
        while not self._quit.is_set():
            began = time.monotonic()
            try:
                self._tick()
            except Exception:  # the loop must go on; the traceback goes to the log
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
        self.fleet.poll(settings.nodes, settings.run)
        if settings.run:
            self._keep_running(settings)
        else:
            self._keep_stopped(settings)
        self._publish()

    def _keep_stopped(self, settings: Settings) -> None:
        if self.fleet.instances or self.children.collector:
            self.fleet.stop()
            self.children.stop_pipeline()
            self.news.say("stopped")
        self.children.keep_relay()
        self.adaptation.stopped()
        self.refinement.stopped()
        self.meter.stopped()
        self.status.state = "Idle"
        self.status.instances = 0
        self.status.instance_rates = []
        self.status.config = settings.config  # what Run will bring

    def _keep_running(self, settings: Settings) -> None:
        self._wanted = max(1, min(self._wanted, settings.max_instances))
        children, rollout = self.children, self.rollout
        children.keep_relay()
        if children.keep_collector(settings.max_instances, rollout.in_force.model):
            self.meter.collector_replaced()
        model = rollout.in_force.model
        rollout.tell_collector(children.collector, model, self.adaptation.redrawn(model))
        children.keep_mirror(settings.input_channel)
        children.keep_ring(settings.input_channel, settings.adapt_frames)
        if self.fleet.keep(self._wanted, settings.nodes, children.source(settings.input_channel),
                           rollout.in_force):
            # a new instance holds its first outputs: judge the pipeline after that
            self._settle_until = time.monotonic() + SETTLE
        self._measure(settings)
        self._roll_out(settings.config)
        if settings.auto_scale:
            self._autoscale()
        self.status.state = self._state(settings)
        self._guard_fit()
        self.adaptation.step(settings, rollout.in_force.model,
                             collector_model(children.collector) or "",
                             self.status.state == "Misfit", self.status.input_rate,
                             time.monotonic())
        self.refinement.step(settings, rollout.in_force.model, time.monotonic())
        self.status.config = rollout.in_force

    def _publish(self) -> None:
        status = self.status
        status.message = self.news.message
        status.restarts = self.news.restarts
        status.nodes_up = self.fleet.nodes_up
        status.wanted_instances = self._wanted
        status.adapt = self.adaptation.status
        status.refine = self.refinement.status
        self.publish(status)

    def _measure(self, settings: Settings) -> None:
        instances = self.fleet.instances
        self.meter.read(list(instances.values()), self.children.collector)
        unique_id = self.meter.input_id(settings.input_channel)
        if unique_id is not None:
            self.children.check_distribution(settings.input_channel, list(instances.values()),
                                             time.monotonic())
        self.meter.measure(unique_id, instances, self.children.collector)
        for item in fields(Figures):
            setattr(self.status, item.name, getattr(self.meter.figures, item.name))

    def _reset(self) -> None:
        self.meter.reset()
        self.news.restarts = 0
        self.status.frames_missed = self.status.frames_processed = 0
        collector = self.children.collector
        for child in [*self.fleet.instances.values(), *([collector] if collector else [])]:
            child.send(self._ctx, "reset_stats")
        self.news.say("statistics reset")

    # -- configuration and policy --------------------------------------------------

    def _roll_out(self, wanted: ModelConfig) -> None:
        """Bring the running instances to the configuration the knobs ask for."""
        before = self.rollout.in_force
        reason = self.rollout.step(wanted, list(self.fleet.instances.values()))
        if reason is not None:
            self._refuse(wanted, reason)
        elif self.rollout.in_force != before:
            self.news.say(f"now running {wanted.model} on {wanted.backend} "
                          f"{wanted.precision}, batch {wanted.batch_size}")
            log.info(self.news.message)

    def _refuse(self, wanted: ModelConfig, reason: str) -> None:
        """Go back to the configuration in force: a refused one is not sent again with the
        next change (a later put changes the knobs from the one in force)."""
        in_force = self.rollout.in_force
        with self._lock:
            if self.settings.config == wanted:  # no put since: else that one is sent next
                self.settings = replace(self.settings, config=in_force)
        refusal = Refusal(wanted, in_force, reason)
        log.warning("%s", refusal.message)
        self.refused(refusal)

    def _autoscale(self) -> None:
        now = time.monotonic()
        ready = len([i for i in self.fleet.instances.values() if i.report is not None])
        observation = self.meter.observation
        if ready != self._wanted or now < self._settle_until or observation is None:
            return  # the instances are still coming up: what they show says little yet
        decision = self.autoscaler.decide(now, observation)
        if decision.instances != self._wanted:
            self._wanted = decision.instances
            self._settle_until = now + SETTLE
            self.news.say(decision.reason)
            log.info("autoscaler: %s", decision.reason)
        elif self._state(self.settings) == "Running":
            self.news.say(decision.reason)

    def _guard_fit(self) -> None:
        model = self.rollout.in_force.model
        if model not in self._model_limits:
            self._model_limits[model] = model_limits(self.model_dir or SHIPPED_MODELS, model)
        limits, typical = self._model_limits[model]
        verdict = self._fit_guard.judge(self.status.residual, self.status.explained,
                                        self.status.frames_over_noise, limits, typical, model,
                                        time.monotonic(),
                                        not_counts=self.status.pixels_not_counts,
                                        agreement=self.status.agreement,
                                        overlaps=self.status.overlaps)
        self.status.residual_severity = verdict.severity
        self.status.one_answer = verdict.one_answer
        self.status.disagree = verdict.disagree
        if verdict.misfit and self.status.state == "Running":
            self.status.state = "Misfit"
            self.news.say(verdict.message)

    def _state(self, settings: Settings) -> str:
        faulted = self.children.deaths.faulted | self.fleet.faulted
        lost = self.fleet.lost(settings.nodes)
        if lost:
            self.news.say(f"{'; '.join(node.describe() for node in lost)}: its frames are "
                          f"lost; {self.fleet.nodes_up} of {settings.nodes} nodes carry on")
        elif self.meter.input_missing and not faulted:
            self.news.say(f"input channel {settings.input_channel} not answering")
        if faulted or lost or self.news.fault or self.meter.input_missing:
            return "Fault"
        instances = self.fleet.instances
        ready = len([i for i in instances.values() if i.report is not None])
        source = self.children.source(settings.input_channel)
        if not ready or any(i.input_channel != source for i in instances.values()):
            return "Starting"
        if ready != self._wanted or len(instances) != self._wanted:
            return "Scaling"
        return "Running"
