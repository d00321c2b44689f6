"""`ptychoedge sim`: the simulated beamline, with a live rate readout.

Three processes, as at a beamline: the detector's control IOC (softioc), its
image server (pvapy), and the sample-stage IOC (caproto). This launcher only
starts and watches them, and talks to them over pvAccess like any client.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from p4p.client.thread import Context

from ptychoedge.inference.instrument import PROBE_PATH, InstrumentError, read_mask
from ptychoedge.iocs.processes import Child, python_module, stop_all
from ptychoedge.iocs.served import refuse_if_served
from ptychoedge.pvdb import detector, readiness
from ptychoedge.pvdb.spec import PvSpec, find
from ptychoedge.sim import physics, probes, samples

log = logging.getLogger("ptychoedge.sim")

READY_TIMEOUT = 60.0  # s for the detector to compute its first frames and follow its IOC
READOUT_PERIOD = 1.0  # s


def _bounded(kind: type, low: float, high: float):
    """An argparse type accepting numbers from `low` to `high`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value
    return parse


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _probe(text: str) -> str:
    """A probe preset's name, or a probe file (checked now) as an absolute path."""
    if text in probes.PROBE_KINDS:
        return text
    try:
        probes.load_probe(text)
    except probes.ProbeError as error:
        raise argparse.ArgumentTypeError(
            f"{error} (or use one of {', '.join(probes.PROBE_KINDS)})") from None
    return str(Path(text).resolve())


def _mask(text: str) -> str:
    """A detector mask file (checked now) as an absolute path."""
    try:
        mask = np.asarray(read_mask(text))
    except InstrumentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if mask.ndim != 2 or not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
        raise argparse.ArgumentTypeError(f"{text}: a mask is a 2-D array of integers or "
                                         f"booleans, got {mask.dtype} {mask.shape}")
    return str(Path(text).resolve())


def _limits(spec: PvSpec) -> tuple[float, float]:
    """The low and high limits of a numeric setting that has both."""
    if spec.low is None or spec.high is None:
        raise ValueError(f"{spec.name} has no limits to check a command line value against")
    return spec.low, spec.high


_SIZE_LIMITS = _limits(find(detector.SETTINGS, "cam1:SizeX"))
_PERIOD = find(detector.SETTINGS, "cam1:AcquirePeriod")
_PHOTON_LIMITS = _limits(find(detector.SETTINGS, "cam1:Photons"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shortest_period, longest_period = _limits(_PERIOD)
    parser.add_argument("--prefix", default="SIM1:", help="PV prefix $(D) (default SIM1:)")
    parser.add_argument("--acquire", action="store_true",
                        help="start acquiring at once (otherwise wait for a put to cam1:Acquire)")
    parser.add_argument("--rate", type=_bounded(float, 1 / longest_period, 1 / shortest_period),
                        default=None, metavar="HZ",
                        help="frame rate: sets cam1:AcquirePeriod to 1/HZ (default "
                             f"{1 / float(_PERIOD.initial):g}, the detector's own)")
    parser.add_argument("--size", type=_bounded(int, *_SIZE_LIMITS), default=None,
                        metavar="PX", help="square frame size in pixels (cam1:SizeX and SizeY)")
    parser.add_argument("--data-type", choices=detector.DATA_TYPES, default=None,
                        help="pixel type (cam1:DataType)")
    parser.add_argument("--source", choices=detector.SCAN_SOURCES, default=None,
                        help="Pattern: the detector's own scan; Stage: the motors' positions; "
                             "Replay: a recorded scan (--replay)")
    parser.add_argument("--replay", type=_existing_file, default=None, metavar="FILE",
                        help="CXI (.cxi/.h5) or NumPy (.npz) scan to replay (implies "
                             "--source Replay)")
    parser.add_argument("--probe", type=_probe, default="default", metavar="KIND|FILE",
                        help=f"the probe: {', '.join(probes.PROBE_KINDS)} (see "
                             "sim/probes.py), or a measured probe (.npy, or CXI at "
                             f"{PROBE_PATH}) sampled at the "
                             f"{physics.OBJECT_PIXEL_SIZE * 1e9:g} nm object pixel, "
                             "the frames' size (default: default)")
    parser.add_argument("--probe-modes", type=_bounded(int, 1, 16), default=1, metavar="K",
                        help="incoherent modes of a probe preset (default 1)")
    parser.add_argument("--sample", choices=list(samples.SAMPLE_KINDS), default="default",
                        help="the sample family (default: default)")
    parser.add_argument("--sample-thickness", type=_bounded(float, 0.01, 100), default=1.0,
                        metavar="S", help="S times the family's usual thickness: phase and "
                                          "absorption (default 1)")
    parser.add_argument("--mask", type=_mask, default=None, metavar="FILE",
                        help="a detector mask (.npy, or CXI or NeXus NXmx pixel_mask), (ny, nx) "
                             "of the frames, nonzero where a pixel "
                             "measures nothing (module gaps, dead pixels): those pixels read "
                             "the pixel type's maximum, as a real detector marks them")
    parser.add_argument("--photons", type=_bounded(float, *_PHOTON_LIMITS),
                        default=None, metavar="N",
                        help="photons per frame with no sample (cam1:Photons)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--no-stage", action="store_true", help="do not start the stage IOC")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="write each process's output to a file there instead of the terminal")


def plain(value):
    """The value of a normative-type reply; an enum's choice as its string."""
    value = value.value
    if hasattr(value, "choices"):
        return value.choices[value.index]
    return value


class Beamline:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = args.prefix
        self.children: list[Child] = []
        self.ctx = Context("pva", nt=False)
        self.quit = threading.Event()

    def _log_path(self, name: str) -> Path | None:
        if self.args.log_dir is None:
            return None
        self.args.log_dir.mkdir(parents=True, exist_ok=True)
        return self.args.log_dir / f"{name}.log"

    def start(self) -> None:
        programs = {
            "detector-ioc": "ptychoedge.sim.detector_ioc",
            "image-server": "ptychoedge.sim.image_server",
        }
        if not self.args.no_stage:
            programs["stage-ioc"] = "ptychoedge.sim.stage_ioc"
        scene = ["--probe", self.args.probe, "--probe-modes", str(self.args.probe_modes),
                 "--sample", self.args.sample, "--sample-thickness",
                 str(self.args.sample_thickness)]
        if self.args.mask:
            scene += ["--mask", self.args.mask]
        for name, module in programs.items():
            extra = scene if name == "image-server" else []
            self.children.append(Child(name, python_module(module, "--prefix", self.prefix,
                                                           *extra), self._log_path(name)))

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise SystemExit(f"ptychoedge sim: error: {child.name} exited "
                                 f"(code {child.returncode}); see its output above")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.quit.is_set():
            self._check_children()
            name = self.prefix + "cam1:DetectorState_RBV"
            try:
                if plain(self.ctx.get(name, timeout=1.0)) not in ("Initializing", "Disconnected"):
                    return
            except TimeoutError:
                # pvAccess searches for a name not yet served ever less often: ask anew
                self.ctx.disconnect(name)
            if time.monotonic() > deadline:
                raise SystemExit(f"ptychoedge sim: error: detector not ready after "
                                 f"{READY_TIMEOUT:.0f} s")
            self.quit.wait(0.2)

    def configure(self) -> None:
        args = self.args
        puts: dict[str, object] = {}
        if args.rate:
            puts["cam1:AcquirePeriod"] = 1.0 / args.rate
        if args.size:
            puts["cam1:SizeX"] = puts["cam1:SizeY"] = args.size
        if args.data_type:
            puts["cam1:DataType"] = args.data_type
        if args.photons:
            puts["cam1:Photons"] = args.photons
        if args.replay:
            puts["cam1:ReplayFile"] = str(args.replay.resolve())
            puts["cam1:ScanSource"] = "Replay"
        if args.source:
            puts["cam1:ScanSource"] = args.source
        for name, value in puts.items():
            self.ctx.put(self.prefix + name, value, timeout=5.0)
        if args.acquire:
            self.ctx.put(self.prefix + "cam1:Acquire", 1, timeout=5.0)

    def readout(self) -> None:
        names = ["cam1:DetectorState_RBV", "cam1:ArrayCounter_RBV", "cam1:ArrayRate_RBV",
                 "cam1:ArraySizeX_RBV", "cam1:ArraySizeY_RBV", "cam1:StatusMessage_RBV"]
        tty = sys.stdout.isatty()
        stop_at = time.monotonic() + self.args.duration if self.args.duration else None
        while not self.quit.wait(READOUT_PERIOD):
            self._check_children()
            try:
                state, count, rate, nx, ny, message = map(plain, self.ctx.get(
                    [self.prefix + name for name in names], timeout=2.0))
                line = (f"{self.prefix} {state:<8} frames {count:>9}  "
                        f"rate {rate:8.1f} Hz  {nx}x{ny}  {message}")
            except TimeoutError:
                line = f"{self.prefix} detector not answering"
            print(f"\r{line:<100}" if tty else line, end="" if tty else "\n", flush=True)
            if stop_at is not None and time.monotonic() >= stop_at:
                break
        if tty:
            print()

    def stop(self) -> None:
        self.ctx.close()
        stop_all(self.children)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ready = readiness.claim()
    beamline = Beamline(args)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: beamline.quit.set())
    refuse_if_served("ptychoedge sim",
                     [args.prefix + name for name in ("cam1:DetectorState_RBV", detector.STATUS)],
                     "choose another --prefix")
    try:
        beamline.start()
        beamline.wait_ready()
        if not beamline.quit.is_set():
            beamline.configure()
            log.info("detector %sPva1:Image ready%s; Ctrl-C stops", args.prefix,
                     ", acquiring" if args.acquire else "")
            ready.announce(args.prefix)
            beamline.readout()
    finally:
        beamline.stop()
    return 0
