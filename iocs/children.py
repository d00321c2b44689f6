"""The supervisor's processes besides the instances: the collector, a mirror, the image relay.

Each is kept running as asked: started, restarted when it dies (and left down
when it dies too often), started again when its command line changes. Call
every method from one thread only: children die with the thread that made them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ptychoedge.iocs.instances import (
    REPORT_PERIOD,
    SERVER_QUEUE,
    STOP_TIMEOUT,
    Deaths,
    Instance,
    Supervised,
)
from ptychoedge.iocs.news import News
from ptychoedge.iocs.processes import python_module, stop_all
from ptychoedge.pvdb import pipeline
from ptychoedge.pvdb.processors import COLLECTOR_PROCESSOR, CollectorArgs

log = logging.getLogger(__name__)

DISTRIBUTION_GRACE = 5.0  # s from an instance's first report to the input's first value


def collector_command(prefix: str, max_instances: int, model: str,
                      model_dir: Path | None) -> list[str]:
    """The `pvapy-hpc-collector` command line of the pipeline on `prefix`."""
    channels = pipeline.collector_channels(prefix)
    args = CollectorArgs(prefix=channels["images"], model=model, model_dir=str(model_dir or ""))
    return ["pvapy-hpc-collector", "--input-channel", channels["input"],
            "--producer-id-list", f"range(1,{max_instances + 1})",
            "--status-channel", channels["status"], "--control-channel", channels["control"],
            "--processor-class", COLLECTOR_PROCESSOR,
            "--processor-args", json.dumps(args.to_args()),
            "--server-queue-size", str(SERVER_QUEUE),
            # what a channel sends on connecting never gets to the processor
            # (mosaic_processor.Receipts): nothing initial to skip
            "--skip-initial-updates", "0",
            "--report-period", str(REPORT_PERIOD), "--disable-curses"]


class Children:
    """The collector, the mirror (for an input that cannot share frames out) and the relay."""

    def __init__(self, prefix: str, log_dir: Path, model_dir: Path | None, news: News):
        self.prefix = prefix
        self.log_dir = log_dir
        self.model_dir = model_dir
        self.news = news
        self.collector: Supervised | None = None
        self.mirror: Supervised | None = None
        self.relay: Supervised | None = None  # serves the images while the IOC runs
        self.ring: Supervised | None = None  # keeps recent frames for adaptation
        self.mirrored: str | None = None  # the input channel a mirror serves again
        self.deaths = Deaths()
        self._collector_model = ""  # the model on the running collector's command line

    def keep_relay(self) -> None:
        """The image relay: the pipeline's images exist while the IOC runs, Run or not."""
        self.relay = self._keep(self.relay, "image-relay", python_module(
            "ptychoedge.iocs.image_relay", "--prefix", self.prefix),
            {"status": self.prefix + pipeline.IMAGES[-1], "control": ""})

    def keep_collector(self, max_instances: int, model: str) -> bool:
        """The collector, started with `model` if it is not running; whether it replaced
        one that died (the ids between the two are then lost). A model change reaches a
        running collector through its control channel (rollout.py), not a restart."""
        running = self.collector
        alive = running is not None and running.child.alive()
        if alive:
            model = self._collector_model
        self.collector = self._keep(running, "collector",
                                    collector_command(self.prefix, max_instances, model,
                                                      self.model_dir),
                                    pipeline.collector_channels(self.prefix))
        if self.collector is running:
            return False
        self._collector_model = model
        return running is not None

    def keep_ring(self, input_channel: str, frames: int) -> None:
        """The frame ring, keeping the last `frames` frames of the input for adaptation."""
        channel = pipeline.ring_channel(self.prefix)
        model_dir = ["--model-dir", str(self.model_dir)] if self.model_dir else []
        self.ring = self._keep(self.ring, "frame-ring", python_module(
            "ptychoedge.inference.frame_ring", "--image", input_channel, "--channel", channel,
            "--frames", str(frames), *model_dir), {"status": channel, "control": ""})

    def keep_mirror(self, input_channel: str) -> None:
        """A pvapy mirror in front of an input channel whose server cannot distribute."""
        if self.mirror is not None and self.mirrored != input_channel:
            stop_all([self.mirror.child], STOP_TIMEOUT)
            self.mirror = None
        if self.mirrored == input_channel:
            mirror = pipeline.mirror_channel(self.prefix)
            self.mirror = self._keep(self.mirror, "mirror", [
                "pvapy-mirror-server", "--channel-map",
                f"({mirror},{input_channel},pva,{SERVER_QUEUE})"],
                {"status": mirror, "control": ""})
        else:
            self.mirrored = None

    def source(self, input_channel: str) -> str:
        """The channel the instances read: the input, or its mirror."""
        if self.mirrored == input_channel:
            return pipeline.mirror_channel(self.prefix)
        return input_channel

    def check_distribution(self, input_channel: str, instances: list[Instance],
                           now: float) -> None:
        """Mirror the input if its server refused the instances' distributor monitors.

        A pvDatabase server sends a new monitor its current value at once; a server
        without the pvapy distributor (p4p, pvxs, a CA gateway) sends nothing to a
        monitor that asks for it.
        """
        if self.mirrored == input_channel:
            return
        for instance in instances:  # a restarted input reads 0 again
            if instance.report is not None and instance.report.received > 0:
                instance.received = True
        refused = [i for i in instances if i.report is not None and not i.received
                   and now - i.reporting_since > DISTRIBUTION_GRACE]
        if refused and len(refused) == len(instances):
            self.mirrored = input_channel
            self.news.say(f"{input_channel} cannot share frames out (its server has no pvapy "
                          f"distributor): mirroring it to {pipeline.mirror_channel(self.prefix)}")
            log.warning(self.news.message)

    def stop_pipeline(self) -> None:
        """Stop the collector and the mirror; one left down may start again at Run."""
        for child in (self.collector, self.mirror, self.ring):
            if child is not None:
                stop_all([child.child], STOP_TIMEOUT)
        self.collector = self.mirror = self.ring = None
        self.deaths.clear()

    def stop_all(self) -> None:
        """Stop every one, the relay too."""
        self.stop_pipeline()
        if self.relay is not None:
            stop_all([self.relay.child], STOP_TIMEOUT)
            self.relay = None

    def _keep(self, child: Supervised | None, name: str, command: list[str],
              channels: dict[str, str]) -> Supervised | None:
        """The running child `name`: restarted if it died or its command line changed."""
        if child is not None and not child.child.alive():
            child.child.close()
            restart = self.deaths.died(child)
            self.news.say(self.deaths.news())
            child = None
            if not restart:
                return None
            self.news.restarted()
            self.news.hold_fault()
        if child is not None and child.command != command:
            stop_all([child.child], STOP_TIMEOUT)
            child = None
        if child is None and name not in self.deaths.faulted:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            child = Supervised(name, command, self.log_dir / f"{name}.log", channels["status"],
                               channels["control"])
        if child is not None:
            child.child.bound_log()  # the collector reports twice a second
        return child
