"""The detector's image server: frames on `$(D)Pva1:Image` from a pvapy PvaServer.

Like an areaDetector driver with its PVA plugin, it follows the control IOC's
`cam1:` settings over pvAccess, publishes frames at the acquire period, evenly
paced, and reports its state, counter and rate on `$(D)Pva1:Status`, which the
control IOC mirrors into its `_RBV` records. It runs in a process of its own:
pvapy bundles its own EPICS base and must not share a process with softioc.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections import deque
from typing import Any

import pvaccess as pva

from ptychoedge.inference.scan_file import ScanFileError
from ptychoedge.pvdb import detector
from ptychoedge.pvdb.spec import Kind
from ptychoedge.sim import probes, samples
from ptychoedge.sim.ntndarray import stamp
from ptychoedge.sim.sources import (
    MICROMETRE,
    CodecSettings,
    PatternSource,
    ReplaySource,
    SourceSettings,
    StageSource,
)

log = logging.getLogger("ptychoedge.sim.image_server")

STATUS_STRUCTURE = {
    "state": pva.STRING,
    "acquiring": pva.BOOLEAN,
    "arrayCounter": pva.LONG,
    "imagesInAcquisition": pva.LONG,
    "acquisitionsDone": pva.LONG,
    "rate": pva.DOUBLE,
    "sizeX": pva.INT,
    "sizeY": pva.INT,
    "message": pva.STRING,
}
STATUS_PERIOD = 0.2  # s between status updates while acquiring
RATE_WINDOW = 1.0  # s of publish times the rate is measured over
MAX_LAG = 0.05  # s behind schedule after which pacing restarts instead of bursting


class RemoteSettings:
    """The control IOC's settings, followed over pvAccess monitors."""

    def __init__(self, prefix: str, on_change, fixed: dict[str, Any] | None = None):
        self.values: dict[str, Any] = {}
        self._on_change = on_change
        self._fixed = fixed or {}  # SourceSettings fields set on the command line
        self._channels = []
        for spec in detector.SETTINGS:
            channel = pva.Channel(prefix + spec.name, pva.PVA)
            channel.monitor(lambda pv, spec=spec: self._update(spec, pv), "field(value)")
            self._channels.append(channel)

    def _update(self, spec, pv) -> None:
        value = pv["value"]
        if spec.kind is Kind.ENUM:
            value = spec.choices[value["index"]]
        self.values[spec.name] = value
        self._on_change(spec.name, value)

    @property
    def complete(self) -> bool:
        return len(self.values) == len(detector.SETTINGS)

    def source_settings(self) -> SourceSettings:
        v = self.values
        return SourceSettings(
            source=v["cam1:ScanSource"], size_x=v["cam1:SizeX"], size_y=v["cam1:SizeY"],
            data_type=v["cam1:DataType"], pattern=v["cam1:ScanPattern"],
            step_um=v["cam1:ScanStep"], points=v["cam1:ScanPoints"], photons=v["cam1:Photons"],
            seed=v["cam1:Seed"], replay_file=v["cam1:ReplayFile"], **self._fixed,
        )

    def codec_settings(self) -> CodecSettings:
        v = self.values
        return CodecSettings(v["cam1:Codec"], v["cam1:BloscCompressor"], v["cam1:BloscCLevel"],
                             v["cam1:BloscShuffle"])

    def stop(self) -> None:
        for channel in self._channels:
            channel.stopMonitor()


class StagePosition:
    """The stage motors' readbacks over Channel Access, in metres."""

    def __init__(self, prefix: str):
        self.x = self.y = 0.0
        self._x = pva.Channel(f"{prefix}m1.RBV", pva.CA)
        self._y = pva.Channel(f"{prefix}m2.RBV", pva.CA)
        self._x.monitor(lambda pv: setattr(self, "x", pv["value"] * MICROMETRE), "field(value)")
        self._y.monitor(lambda pv: setattr(self, "y", pv["value"] * MICROMETRE), "field(value)")

    def read(self) -> tuple[float, float]:
        return self.x, self.y

    def stop(self) -> None:
        self._x.stopMonitor()
        self._y.stopMonitor()


class ImageServer:
    def __init__(self, prefix: str, fixed_settings: dict[str, Any] | None = None):
        self.prefix = prefix
        self.image_channel = prefix + detector.IMAGE
        self.status_channel = prefix + detector.STATUS
        self.server = pva.PvaServer()
        self.server.addRecord(self.image_channel, pva.NtNdArray())
        self.status: dict[str, Any] = {"state": "Disconnected"}
        self.server.addRecord(self.status_channel, pva.PvObject(STATUS_STRUCTURE, self.status))

        self.array_counter = 0
        self.acquisitions_done = 0
        self._publish_times: deque[float] = deque()
        self._acquire = threading.Event()
        self._quit = threading.Event()
        self._pacing_changed = threading.Event()  # Stop or a new period: wakes a frame's wait
        self._sources: dict[SourceSettings, Any] = {}
        self.stage = StagePosition(prefix)
        self.settings = RemoteSettings(prefix, self._on_setting, fixed_settings)

    # -- settings -------------------------------------------------------------

    def _on_setting(self, name: str, value: Any) -> None:
        if name == "cam1:Acquire":
            if value == "Acquire":
                self._acquire.set()
            else:
                self._acquire.clear()
            self._pacing_changed.set()
        elif name == "cam1:AcquirePeriod":
            self._pacing_changed.set()
        elif name == "cam1:ArrayCounter":
            self.array_counter = int(value)
            self._post_status()

    def _source(self, settings: SourceSettings):
        if settings.source == "Stage":
            return StageSource(settings, self.stage.read)
        source = self._sources.get(settings)
        if source is None:
            self._post_status(state="Initializing", message="computing frames")
            started = time.monotonic()
            bank = ReplaySource if settings.source == "Replay" else PatternSource
            source = bank(settings)
            log.info("%d frames of %dx%d ready in %.1f s", len(source.frames), source.size_x,
                     source.size_y, time.monotonic() - started)
            self._sources = {settings: source}  # keep one bank: they can be large
        source.rewind()
        return source

    # -- status ---------------------------------------------------------------

    def _post_status(self, **fields: Any) -> None:
        now = time.monotonic()
        while self._publish_times and self._publish_times[0] < now - RATE_WINDOW:
            self._publish_times.popleft()
        self.status.update(fields, arrayCounter=self.array_counter,
                           acquisitionsDone=self.acquisitions_done,
                           rate=len(self._publish_times) / RATE_WINDOW)
        # A new object each time: pvapy sends only what differs from the record's copy.
        self.server.update(self.status_channel, pva.PvObject(STATUS_STRUCTURE, self.status))

    # -- acquisition ----------------------------------------------------------

    def run(self) -> None:
        while not self.settings.complete and not self._quit.wait(0.05):
            pass
        if self._quit.is_set():
            return
        log.info("following %scam1: settings", self.prefix)
        self._prepare_default_source()
        self._post_status(state="Idle", message="ready")
        log.info("ready: frames on %s", self.image_channel)
        while not self._quit.is_set():
            if self._acquire.wait(0.1):
                self._acquire_once()

    def _prepare_default_source(self) -> None:
        settings = self.settings.source_settings()
        if settings.source == "Pattern":
            try:
                self._source(settings)
            except ValueError as error:  # e.g. a probe file for another frame size
                log.warning("frames not prepared: %s", error)

    def _acquire_once(self) -> None:
        values = self.settings.values
        try:
            source = self._source(self.settings.source_settings())
            source.set_codec(self.settings.codec_settings())
        except (ScanFileError, ValueError) as error:
            log.error("acquisition refused: %s", error)
            self._finish(state="Error", message=str(error)[:200])
            return
        mode = values["cam1:ImageMode"]
        total = {"Single": 1, "Multiple": values["cam1:NumImages"]}.get(mode)
        self._post_status(state="Acquire", acquiring=True, imagesInAcquisition=0,
                          sizeX=source.size_x, sizeY=source.size_y, message="acquiring")
        published = 0
        last_due: float | None = None  # when the last frame was due
        last_status = time.monotonic()
        while self._acquire.is_set() and not self._quit.is_set():
            if total is not None and published >= total:
                break
            now = time.monotonic()
            # A new period counts from the last frame, not from the acquisition's start.
            due = now if last_due is None else last_due + values["cam1:AcquirePeriod"]
            if due > now:
                self._pacing_changed.wait(due - now)  # Stop or a new period ends it early
                self._pacing_changed.clear()
                continue
            if now - due > MAX_LAG:  # fell behind: restart the pacing, do not burst
                due = now
            frame = source.next_frame()
            self.array_counter += 1
            stamp(frame, self.array_counter)
            self.server.updateUnchecked(self.image_channel, frame)
            published += 1
            last_due = due
            now = time.monotonic()
            self._publish_times.append(now)
            if now - last_status >= STATUS_PERIOD:
                last_status = now
                self._post_status(imagesInAcquisition=published)
        self._finish(state="Idle", imagesInAcquisition=published,
                     message=f"acquired {published} frames")

    def _finish(self, **fields: Any) -> None:
        self.acquisitions_done += 1
        self._acquire.clear()
        self._publish_times.clear()
        self._post_status(acquiring=False, **fields)

    def stop(self) -> None:
        self._quit.set()
        self._acquire.clear()
        self._pacing_changed.set()

    def close(self) -> None:
        self.settings.stop()
        self.stage.stop()
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptychoedge-image-server",
        description="Serve simulated detector frames on $(prefix)Pva1:Image (pvapy).")
    parser.add_argument("--prefix", default="SIM1:", help="detector PV prefix (default SIM1:)")
    parser.add_argument("--probe", default="default", help="probe kind or file (sim/probes.py)")
    parser.add_argument("--probe-modes", type=int, default=1, help="modes of a probe preset")
    parser.add_argument("--sample", default="default", help="sample kind (sim/samples.py)")
    parser.add_argument("--sample-thickness", type=float, default=1.0,
                        help="times the sample's usual thickness")
    parser.add_argument("--mask", default="", help="a detector mask (.npy, CXI or NeXus NXmx)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s image-server %(message)s")
    log.info("probe %s; sample %s", probes.describe(args.probe),
             samples.describe(args.sample, args.sample_thickness))
    server = ImageServer(args.prefix, {"probe": args.probe, "probe_modes": args.probe_modes,
                                       "sample": args.sample,
                                       "sample_thickness": args.sample_thickness,
                                       "mask": args.mask})
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.run()
    finally:
        server.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
