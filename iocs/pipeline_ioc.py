"""`ptychoedge ioc`: the pipeline's control surface, softioc records over CA and PVA.

Knobs (with `_RBV` readbacks), status and the automatic scaling, all built
from `pvdb/pipeline.py`. The supervisor (supervisor.py) does the work; this
module turns puts into its settings and its status into records. Knob values
survive a restart through softioc's autosave.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from softioc import alarm, asyncio_dispatcher, autosave, builder, softioc

from ptychoedge.iocs import access
from ptychoedge.iocs.served import refuse_if_served
from ptychoedge.iocs.settings import (
    Settings,
    record_value,
    record_values,
    setting_value,
    settings_from,
)
from ptychoedge.iocs.supervisor import Refusal, Status, Supervisor
from ptychoedge.pvdb import pipeline, readiness, records
from ptychoedge.pvdb.spec import PvSpec

log = logging.getLogger("ptychoedge.ioc")

AUTOSAVE_PERIOD = 1.0  # s
MESSAGE_LENGTH = records.LONG_STRING_LENGTH - 1
REFUSAL_HOLD = 10.0  # s a refused put's reason stays in Message_RBV before other news


def default_state_dir(prefix: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "ptychoedge" / prefix.rstrip(":")


class PipelineIOC:
    def __init__(self, prefix: str, state_dir: Path, model_dir: Path | None = None,
                 local_node: bool = True):
        self.prefix = prefix
        state_dir.mkdir(parents=True, exist_ok=True)
        saved = state_dir / f"{prefix.rstrip(':')}.softsav"
        if not saved.exists():  # a first start: nothing saved (softioc would warn of it)
            saved.write_text("{}\n")
        autosave.configure(state_dir, prefix.rstrip(":"), save_period=AUTOSAVE_PERIOD,
                           timestamped_backups=False)
        records.set_prefix(prefix)
        self.knobs = {spec.name: records.Setting(spec, self._changed, self._refused,
                                                 autosave=True)
                      for spec in pipeline.KNOBS}
        self.readbacks = {spec.name: records.input_record(spec, spec.readback_name)
                          for spec in pipeline.KNOBS}
        records.Setting(pipeline.RESET_STATS, self._reset, self._refused)
        records.Setting(pipeline.ADAPT, self._adapt, self._refused)
        records.Setting(pipeline.REFINE, self._refine, self._refused)
        self.status = {spec.name: records.input_record(spec) for spec in pipeline.STATUS_PVS}
        self._said: str | None = None  # the supervisor's message last shown
        self._refusal_shown_until = 0.0
        self.supervisor = Supervisor(prefix, state_dir / "logs", self.publish,
                                     self._config_refused, model_dir, local_node)

    def settings(self) -> Settings:
        """The knobs' values (after autosave restored them) as supervisor settings."""
        return settings_from({name: knob.get() for name, knob in self.knobs.items()})

    def start(self) -> None:
        settings = self.settings()
        self.supervisor.start(settings)
        log.info("pipeline %s ready: %s", self.prefix, settings)

    # -- puts ----------------------------------------------------------------------

    def _changed(self, spec: PvSpec, value: Any) -> None:
        if spec.setting:
            self.supervisor.change(**{spec.setting: setting_value(spec, value)})

    def _refused(self, spec: PvSpec, reason: str) -> None:
        self._show_refusal(reason)

    def _config_refused(self, refusal: Refusal) -> None:
        """The instances refused a configuration: its knobs go back to the one in force."""
        for spec in pipeline.KNOBS:
            if spec.setting not in refusal.refused.__dataclass_fields__:
                continue
            refused = getattr(refusal.refused, spec.setting)
            in_force = getattr(refusal.in_force, spec.setting)
            knob = self.knobs[spec.name]
            if refused != in_force and setting_value(spec, knob.get()) == refused:
                knob.restore(record_value(spec, in_force))  # not put again since
        self._show_refusal(refusal.message)

    def _show_refusal(self, reason: str) -> None:
        # shown at once, and kept a while over the supervisor's news (the autoscaler's
        # comes every second)
        self.status["Message_RBV"].set(reason[:MESSAGE_LENGTH])
        self._refusal_shown_until = time.monotonic() + REFUSAL_HOLD

    def _reset(self, spec: PvSpec, value: Any) -> None:
        if value:
            self.supervisor.reset_stats()

    def _adapt(self, spec: PvSpec, value: Any) -> None:
        if value:
            self.supervisor.adapt()

    def _refine(self, spec: PvSpec, value: Any) -> None:
        if value:
            self.supervisor.refine()

    # -- status ----------------------------------------------------------------------

    def publish(self, status: Status) -> None:
        """Show what the supervisor measured and applied."""
        settings = self.supervisor.settings
        applied = record_values(replace(
            settings, instances=-(-status.wanted_instances // settings.nodes),
            config=status.config))
        for name, value in applied.items():
            self._set(self.readbacks[name], value)
        lost = status.missed_rate > 0
        values = {
            "InputRate_RBV": status.input_rate, "ProcessedRate_RBV": status.processed_rate,
            "FramesProcessed_RBV": status.frames_processed,
            "FramesMissed_RBV": status.frames_missed, "MissedRate_RBV": status.missed_rate,
            "Backlog_RBV": status.backlog, "FrameErrors_RBV": status.frame_errors,
            "LatencyP50_RBV": status.latency_p50, "LatencyP99_RBV": status.latency_p99,
            "InferenceTime_RBV": status.inference_time, "Residual_RBV": status.residual,
            "Variation_RBV": status.frames_over_noise, "Explained_RBV": 100 * status.explained,
            "Agreement_RBV": 100 * status.agreement,
            "Instances_RBV": status.instances, "NodesUp_RBV": status.nodes_up,
            "Restarts_RBV": status.restarts,
            "State_RBV": pipeline.STATES.index(status.state),
            "AdaptState_RBV": pipeline.ADAPT_STATES.index(status.adapt.state),
            "AdaptProgress_RBV": status.adapt.progress, "AdaptLoss_RBV": status.adapt.loss,
            "AdaptModel_RBV": status.adapt.model,
            "RefineState_RBV": pipeline.REFINE_STATES.index(status.refine.state),
            "RefineProgress_RBV": status.refine.progress, "RefineError_RBV": status.refine.error,
            "RefinedInstrument_RBV": status.refine.instrument,
            "RefinedResolution_RBV": status.refine.resolution,
        }
        # shown when it changes: a refused put's reason stays until there is news
        if status.message != self._said and time.monotonic() >= self._refusal_shown_until:
            self._said = status.message
            values["Message_RBV"] = status.message[:MESSAGE_LENGTH]
        severities = {
            "MissedRate_RBV": alarm.MAJOR_ALARM if lost else alarm.NO_ALARM,
            "FramesMissed_RBV": alarm.MINOR_ALARM if status.frames_missed else alarm.NO_ALARM,
            "Restarts_RBV": alarm.MINOR_ALARM if status.restarts else alarm.NO_ALARM,
            "State_RBV": {"Fault": alarm.MAJOR_ALARM, "Misfit": alarm.MINOR_ALARM}.get(
                status.state, alarm.NO_ALARM),
            "AdaptState_RBV": alarm.MINOR_ALARM if status.adapt.state == "Failed" else
            alarm.NO_ALARM,
            "RefineState_RBV": alarm.MINOR_ALARM if status.refine.state == "Failed" else
            alarm.NO_ALARM,
            "Residual_RBV": (alarm.NO_ALARM, alarm.MINOR_ALARM,
                             alarm.MAJOR_ALARM)[status.residual_severity],
            "Explained_RBV": alarm.MINOR_ALARM if status.one_answer else alarm.NO_ALARM,
            "Agreement_RBV": alarm.MINOR_ALARM if status.disagree else alarm.NO_ALARM,
        }
        for name, value in values.items():
            self._set(self.status[name], value, severities.get(name, alarm.NO_ALARM))
        if status.adapt.state == "Swapping" and self.knobs["Model"].get() != status.adapt.model:
            self.knobs["Model"].set(status.adapt.model)  # as a put would: saved, then rolled out
        rates = status.instance_rates[:pipeline.MAX_INSTANCES]
        self.status["InstanceRates_RBV"].set(rates or [0.0])

    @staticmethod
    def _set(record, value, severity: int = alarm.NO_ALARM) -> None:
        record.set(value, severity=severity,
                   alarm=alarm.STATE_ALARM if severity else alarm.NO_ALARM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="EDGE1:", help="PV prefix $(P) (default EDGE1:)")
    parser.add_argument("--input-channel", default=None, metavar="PV",
                        help="detector image PV (sets the InputChannel knob; default: its "
                             "saved value, or SIM1:Pva1:Image)")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="where knob values are saved and children log (default "
                             "$XDG_STATE_HOME/ptychoedge/PREFIX)")
    parser.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                        help="directory of models (default: the shipped models)")
    parser.add_argument("--no-local-node", dest="local_node", action="store_false",
                        help="run no inference instances on this host: node 1 is then the "
                             "host whose agent serves $(P)Node1: (see `ptychoedge node`)")
    parser.add_argument("--acf", type=Path, default=None, metavar="FILE",
                        help="EPICS access security file: knobs are in ASG KNOBS, status in "
                             "DEFAULT; hosts are matched by client address (example: "
                             f"{access.EXAMPLE_ACF})")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pipeline-ioc %(message)s")
    ready = readiness.claim()
    state_dir = args.state_dir or default_state_dir(args.prefix)
    if args.model_dir is not None and not args.model_dir.is_dir():
        raise SystemExit(f"ptychoedge ioc: error: no model directory {args.model_dir}")
    refuse_if_served("ptychoedge ioc", [args.prefix + "State_RBV"], "choose another --prefix")
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    ioc = PipelineIOC(args.prefix, state_dir, args.model_dir, args.local_node)
    builder.LoadDatabase()
    access.init_ioc(dispatcher, args.acf, "ptychoedge ioc")
    if args.input_channel:
        ioc.knobs["InputChannel"].set(args.input_channel)
    ioc.start()
    log.info("serving %s records; knobs saved in %s; Ctrl-C stops", args.prefix, state_dir)
    ready.announce(args.prefix)

    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    quit_event.wait()
    log.info("stopping the pipeline")
    ioc.supervisor.close()
    log.info("stopped")
    softioc.safeEpicsExit(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge-ioc", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
