"""`ptychoedge node`: the agent that runs a pipeline's inference instances on one more host.

A small soft IOC under `$(P)Node<n>:` (pvdb/node.py). The pipeline IOC puts
the instances this host should run into `Spec`; the agent starts them, keeps
them running (restarting one that dies, leaving it down after too many
deaths) and reports back. The instances themselves talk to the detector, the
collector and the supervisor over pvAccess, like any instance. Stopping the
agent stops its instances.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from pathlib import Path

from softioc import asyncio_dispatcher, builder, softioc

from ptychoedge.iocs import access
from ptychoedge.iocs.instances import InstancePool, InstanceSpec
from ptychoedge.iocs.served import refuse_if_served
from ptychoedge.pvdb import node, readiness, records
from ptychoedge.pvdb.spec import PvSpec

log = logging.getLogger("ptychoedge.node")

PERIOD = 1.0  # s between checks of the instances
MESSAGE_LENGTH = records.LONG_STRING_LENGTH - 1


class NodeAgent:
    def __init__(self, prefix: str, log_dir: Path, model_dir: Path | None):
        self.prefix = prefix
        self.pool = InstancePool(log_dir, model_dir)
        self.spec: InstanceSpec | None = None
        records.set_prefix(prefix)
        records.Setting(node.SPEC, self._changed, self._refused)
        self.spec_rbv = records.input_record(node.SPEC, node.SPEC.readback_name)
        self.status = {spec.name: records.input_record(spec) for spec in node.STATUS_PVS}
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._heartbeat = 0
        self._thread = threading.Thread(target=self._run, name="node-agent", daemon=True)

    def start(self) -> None:
        self.status["Host_RBV"].set(socket.gethostname())
        self._thread.start()

    def close(self) -> None:
        self._quit.set()
        self._thread.join(30)

    def _changed(self, spec: PvSpec, value: str) -> None:
        try:
            wanted = InstanceSpec.from_json(value) if value else None
        except ValueError as error:
            self._refused(spec, str(error))
            return
        with self._lock:
            self.spec = wanted

    def _refused(self, spec: PvSpec, reason: str) -> None:
        log.warning(reason)
        self.status["Message_RBV"].set(reason[:MESSAGE_LENGTH])

    # Instances are started only on this thread: they die with the thread that made them.
    def _run(self) -> None:
        while not self._quit.wait(PERIOD):
            with self._lock:
                spec = self.spec
            try:
                self._tick(spec)
            except Exception:
                log.exception("node agent step failed")
        self.pool.stop_all()

    def _tick(self, spec: InstanceSpec | None) -> None:
        messages = []
        if spec is None and self.pool.instances:
            self.pool.stop_all()
            messages.append("stopped")
        elif spec is not None:
            started = self.pool.keep(spec)
            if deaths := self.pool.deaths.news():
                messages.append(deaths)
            if started:
                messages.append(f"started instance(s) {', '.join(map(str, started))}")
                log.info(messages[-1])
        self._heartbeat += 1
        if messages:  # first: whoever sees the new figures below also sees why they changed
            self.status["Message_RBV"].set("; ".join(messages)[:MESSAGE_LENGTH])
        self.spec_rbv.set(spec.to_json() if spec else "")
        self.status["Instances_RBV"].set(len(self.pool.instances))
        self.status["Restarts_RBV"].set(self.pool.deaths.restarts)
        self.status["Heartbeat_RBV"].set(self._heartbeat)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="EDGE1:", metavar="P",
                        help="the pipeline IOC's prefix $(P) (default EDGE1:)")
    parser.add_argument("--node", type=int, required=True, metavar="N",
                        help=f"this host's node number, 1..{node.MAX_NODES}; the agent "
                             "serves $(P)Node<N>:")
    parser.add_argument("--log-dir", type=Path, default=Path("ptychoedge-node-logs"),
                        metavar="DIR", help="where the instances log (default "
                        "./ptychoedge-node-logs)")
    parser.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                        help="directory of models on this host (default: the shipped models)")
    parser.add_argument("--acf", type=Path, default=None, metavar="FILE",
                        help="EPICS access security file: Spec is in ASG KNOBS (list the "
                             "pipeline IOC's host there), status in DEFAULT")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s node-agent %(message)s")
    ready = readiness.claim()
    if not 1 <= args.node <= node.MAX_NODES:
        raise SystemExit(f"ptychoedge node: error: --node must be 1..{node.MAX_NODES}")
    if args.model_dir is not None and not args.model_dir.is_dir():
        raise SystemExit(f"ptychoedge node: error: no model directory {args.model_dir}")
    prefix = node.node_prefix(args.pipeline, args.node)
    refuse_if_served("ptychoedge node", [prefix + "Heartbeat_RBV"],
                     "give this host another --node number")
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    agent = NodeAgent(prefix, args.log_dir, args.model_dir)
    builder.LoadDatabase()
    access.init_ioc(dispatcher, args.acf, "ptychoedge node")
    agent.start()
    log.info("node agent %s on %s ready; Ctrl-C stops", prefix, socket.gethostname())
    ready.announce(prefix)

    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    quit_event.wait()
    log.info("stopping the instances")
    agent.close()
    softioc.safeEpicsExit(0)
    return 0
