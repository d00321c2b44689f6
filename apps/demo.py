"""`ptychoedge demo`: the whole pipeline on one machine, from detector to stitched image.

It starts the simulated beamline (`ptychoedge sim`) and the pipeline IOC
(`ptychoedge ioc`) as child processes, switches on automatic scaling, runs a
Fermat-spiral scan of the simulated sample, shows the pipeline's progress once
a second, and ends with the stitched amplitude and phase as PNG beside the
ground truth, and a short report; then it presses `Refine` and scores the image
refined through the physics the same way. It talks to both IOCs over pvAccess, as any
client would. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from p4p.client.thread import Context

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.resolution import with_half_scans
from ptychoedge.iocs.processes import Child, python_module, stop_all
from ptychoedge.iocs.served import refuse_if_served
from ptychoedge.pvdb import detector, pipeline
from ptychoedge.pvdb.spec import find

log = logging.getLogger("ptychoedge.demo")

START_TIMEOUT = 120.0  # s for the IOCs and the first instance, on a busy machine
DRAIN_TIMEOUT = 60.0  # s after the last frame for the pipeline to finish
REFINE_MARGIN = 120.0  # s beyond --refine for the ring's scan and the network's first image
PROGRESS = ("State_RBV", "InputRate_RBV", "ProcessedRate_RBV", "FramesProcessed_RBV",
            "FramesMissed_RBV", "Backlog_RBV", "Instances_RBV", "LatencyP99_RBV", "Message_RBV")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="EDGE1:", help="pipeline PV prefix $(P) "
                                                           "(default EDGE1:)")
    parser.add_argument("--sim-prefix", default="SIM1:", help="beamline PV prefix $(D) "
                                                              "(default SIM1:)")
    parser.add_argument("--rate", type=float, default=300.0, metavar="HZ",
                        help="detector frame rate (default 300)")
    parser.add_argument("--points", type=int, default=400,
                        help="points of the Fermat-spiral scan (default 400)")
    parser.add_argument("--passes", type=int, default=10,
                        help="times the scan is repeated, as in a longer measurement "
                             "(default 10)")
    parser.add_argument("--max-instances", type=int, default=4,
                        help="most inference instances automatic scaling may start (default 4)")
    parser.add_argument("--refine", type=float,
                        default=find(pipeline.KNOBS, "RefineSeconds").initial, metavar="SECONDS",
                        help="then refine the image through the physics for this long "
                             "(default %(default)g; 0: do not)")
    parser.add_argument("--out", type=Path, default=Path("ptychoedge-demo"),
                        help="folder for the pictures, the report and the logs "
                             "(default ./ptychoedge-demo)")


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.d, self.p = args.sim_prefix, args.prefix
        self.frames = args.points * args.passes
        self.ctx = Context("pva", nt=False)
        self.children: list[Child] = []
        self.quit = threading.Event()
        self.peak_instances = 0
        self.started = 0.0

    # -- the steps -----------------------------------------------------------------

    def start(self) -> None:
        refuse_if_served("ptychoedge demo", (self.d + detector.STATUS, self.p + "State_RBV"),
                         "choose other prefixes (--prefix, --sim-prefix)")
        logs = self.args.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        state = self.args.out / "ioc-state"
        for saved in state.glob("*.softsav*"):
            saved.unlink()  # the demo sets every knob itself
        self.children.append(Child("sim", python_module(
            "ptychoedge.iocs.cli", "sim", "--prefix", self.d, "--no-stage",
            "--log-dir", str(logs)), logs / "sim.log"))
        self.children.append(Child("ioc", python_module(
            "ptychoedge.iocs.cli", "ioc", "--prefix", self.p,
            "--input-channel", self.d + detector.IMAGE, "--state-dir", str(state)),
            logs / "ioc.log"))
        print(f"starting the simulated beamline ({self.d}) and the pipeline IOC ({self.p}); "
              f"logs in {logs}/", flush=True)
        self._wait(lambda: self._get(self.d + "cam1:DetectorState_RBV") == "Idle",
                   "the simulated detector")
        self._wait(lambda: self._get(self.p + "State_RBV") == "Idle", "the pipeline IOC")
        for knob, value in (("AutoScale", "On"), ("MaxInstances", self.args.max_instances),
                            ("TargetRate", self.args.rate), ("Run", "Run")):
            self.ctx.put(self.p + knob, value, timeout=5)
        print("pipeline starting: automatic scaling on", flush=True)
        self._wait(lambda: self._get(self.p + "State_RBV") == "Running", "the pipeline")

    def scan(self) -> None:
        puts = (("cam1:ScanSource", "Pattern"), ("cam1:ScanPattern", "Fermat"),
                ("cam1:ScanPoints", self.args.points), ("cam1:ImageMode", "Multiple"),
                ("cam1:NumImages", self.frames), ("cam1:AcquirePeriod", 1.0 / self.args.rate),
                ("cam1:Acquire", 1))
        for name, value in puts:
            self.ctx.put(self.d + name, value, timeout=5)
        print(f"scanning: {self.args.points} points x {self.args.passes} passes = "
              f"{self.frames} frames at {self.args.rate:g} Hz", flush=True)
        self.started = time.monotonic()
        acquiring_until = None
        while not self.quit.wait(1.0):
            status = self._progress()
            acquiring = self._get(self.d + "cam1:Acquire_RBV") == "Acquire"
            if not acquiring and acquiring_until is None:
                acquiring_until = time.monotonic()
            done = status["FramesProcessed_RBV"] + status["FramesMissed_RBV"] >= self.frames
            if acquiring_until is not None and (
                    (done and status["Backlog_RBV"] == 0)
                    or time.monotonic() - acquiring_until > DRAIN_TIMEOUT):
                break
        if sys.stdout.isatty():
            print()

    def report(self) -> dict:
        status = {name: self._get(self.p + name) for name in PROGRESS}
        images = self._mosaic()
        seconds = time.monotonic() - self.started
        result = {
            "frames": self.frames, "rate_hz": self.args.rate,
            "processed": status["FramesProcessed_RBV"], "lost": status["FramesMissed_RBV"],
            "peak_instances": self.peak_instances, "instances_at_end": status["Instances_RBV"],
            "latency_p99_ms": status["LatencyP99_RBV"], "seconds": round(seconds, 1),
        }
        if images is not None:
            result.update(self._score(images))
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{result['processed']} of {self.frames} frames reconstructed, "
              f"{result['lost']} lost, at {self.args.rate:g} Hz; up to "
              f"{self.peak_instances} instance(s); latency p99 "
              f"{result['latency_p99_ms']:.1f} ms")
        if "mosaic_amplitude_ssim" in result:
            print(f"stitched image against the ground truth: SSIM amplitude "
                  f"{result['mosaic_amplitude_ssim']:.3f}, phase "
                  f"{result['mosaic_phase_ssim']:.3f}; correlation amplitude "
                  f"{result['mosaic_amplitude_correlation']:.2f}, phase "
                  f"{result['mosaic_phase_correlation']:.2f}")
            print(f"pictures: {result['picture']}")
        print(f"report: {self.args.out / 'report.json'}")
        return result

    def refine(self, result: dict) -> None:
        """Press Refine, follow it, and score the refined image against the truth."""
        seconds = self.args.refine
        self.ctx.put(self.p + "RefineSeconds", seconds, timeout=5)
        self.ctx.put(self.p + "Refine", 1, timeout=5)
        whole = with_half_scans(seconds)
        print(f"refining the image through the physics for {seconds:g} s, then two half-scans "
              f"for its resolution ({whole:.0f} s in all)", flush=True)
        self._wait(lambda: self._get(self.p + "RefineState_RBV") != "Idle", "the refinement",
                   10.0)
        deadline = time.monotonic() + whole + REFINE_MARGIN
        shown = ""
        while (state := self._get(self.p + "RefineState_RBV")) in ("Collecting", "Refining"):
            if time.monotonic() > deadline or self.quit.wait(1.0):
                print("\nthe refinement did not end in time", file=sys.stderr)
                return
            error = self._get(self.p + "RefineError_RBV")
            if state == "Collecting":
                line = "Collecting: the frame ring writes the frames it kept"
            elif not np.isfinite(error):
                line = "Refining: the network draws the kept frames first"
            else:
                line = (f"Refining: {self._get(self.p + 'RefineProgress_RBV'):3.0f}% of "
                        f"{whole:.0f} s, Fourier error {error:.5f}")
            if sys.stdout.isatty():
                print(f"\r{line:<60}", end="", flush=True)
            elif line != shown:
                print(line, flush=True)
            shown = line
        if sys.stdout.isatty():
            print()
        message = self._get(self.p + "Message_RBV")
        if state != "Idle":
            print(f"the refinement failed: {message}", file=sys.stderr)
            return
        print(message)
        instrument = self._get(self.p + "RefinedInstrument_RBV")
        print(f"the refined object, and the geometry with the refined probe (an instrument "
              f"file): {instrument}")
        scores = self._score_refined()
        if scores:
            result["refined"] = scores | {
                "instrument": instrument,
                "resolution_nm": self._get(self.p + "RefinedResolution_RBV")}
            (self.args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"refined image against the ground truth: SSIM amplitude "
                  f"{scores['amplitude_ssim']:.3f} (flat {scores['flat_amplitude_ssim']:.3f}), "
                  f"phase {scores['phase_ssim']:.3f} (flat {scores['flat_phase_ssim']:.3f}); "
                  f"correlation amplitude {scores['amplitude_correlation']:.2f}, phase "
                  f"{scores['phase_correlation']:.2f}")
            print(f"pictures: {scores['picture']}")

    def stop(self) -> None:
        self.ctx.close()
        stop_all(self.children)

    # -- helpers -------------------------------------------------------------------

    def _get(self, name: str):
        try:
            return plain(self.ctx.get(name, timeout=2.0))
        except TimeoutError:
            self.ctx.disconnect(name)  # search afresh: the server may have started since
            return None

    def _wait(self, condition, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.quit.is_set():
            for child in self.children:
                if not child.alive():
                    raise SystemExit(f"ptychoedge demo: error: {child.name} exited (code "
                                     f"{child.returncode}); see {child.log_path}")
            if condition():
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"ptychoedge demo: error: {what} not ready after "
                                 f"{timeout:.0f} s; logs in {self.args.out / 'logs'}")
            self.quit.wait(0.5)

    def _progress(self) -> dict:
        status: dict[str, Any] = {name: self._get(self.p + name) for name in PROGRESS}
        status = {name: (0 if value is None and name != "Message_RBV" else value)
                  for name, value in status.items()}
        self.peak_instances = max(self.peak_instances, status["Instances_RBV"])
        line = (f"{time.monotonic() - self.started:5.0f} s  {status['State_RBV'] or '?':<8} "
                f"in {status['InputRate_RBV']:6.0f} Hz  out {status['ProcessedRate_RBV']:6.0f} Hz"
                f"  done {status['FramesProcessed_RBV']:>6}/{self.frames}  lost "
                f"{status['FramesMissed_RBV']:>4}  instances {status['Instances_RBV']}  "
                f"| {status['Message_RBV'] or ''}")
        if sys.stdout.isatty():
            print(f"\r{line[:150]:<150}", end="", flush=True)
        else:
            print(line, flush=True)
        return status

    def _mosaic(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The stitched amplitude and phase, once the collector has placed the last frame."""
        images = []
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and not self.quit.is_set():
            try:
                values = self.ctx.get([self.p + name for name in pipeline.IMAGES[2:]],
                                      timeout=5.0)
            except TimeoutError:
                self.quit.wait(1.0)
                continue
            images = values
            if all(value["uniqueId"] >= self.frames for value in values):
                break
            self.quit.wait(1.0)
        if not images:
            print("the mosaic images could not be read", file=sys.stderr)
            return None
        arrays = []
        for value in images:
            nx, ny = (dimension["size"] for dimension in value["dimension"])
            arrays.append(np.asarray(value["value"], np.float32).reshape(ny, nx))
        return arrays[0], arrays[1]

    def _score_refined(self) -> dict:
        """The refined image (placed by its attributes) against the simulated sample."""
        from ptychoedge.inference.comparison import compare_images
        from ptychoedge.inference.reconstruct import save_pictures
        from ptychoedge.sim import scene

        values = self.ctx.get([self.p + name for name in pipeline.REFINED_IMAGES], timeout=5.0)
        arrays = []
        for value in values:
            nx, ny = (dimension["size"] for dimension in value["dimension"])
            arrays.append(np.asarray(value["value"], np.float32).reshape(ny, nx))
        where = {a["name"]: a["value"] for a in values[0]["attribute"]}
        size = int(find(detector.SETTINGS, "cam1:SizeX").initial)
        simulator = scene.simulator(size)  # what `ptychoedge sim` shows its detector
        amplitude, phase = arrays
        scores, aligned = compare_images(amplitude, phase, amplitude > 0, where["PixelSize"],
                                         (int(where["OriginX"]), int(where["OriginY"])),
                                         simulator.sample, simulator.pixel_size)
        picture = self.args.out / "refined.png"
        lit = amplitude > 0
        save_pictures(picture, f"ptychoedge demo, refined: correlation amplitude "
                      f"{scores['amplitude_correlation']:.2f}, phase "
                      f"{scores['phase_correlation']:.2f}",
                      {"refined": (amplitude, phase),
                       "ground truth": (np.abs(aligned) * lit, np.angle(aligned) * lit)})
        return {**{k: round(float(v), 4) for k, v in scores.items()}, "picture": str(picture)}

    def _score(self, images: tuple[np.ndarray, np.ndarray]) -> dict:
        from ptychoedge.inference import evaluate
        from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
        from ptychoedge.sim import physics

        manifest = load_manifest(DEFAULT_MODEL)
        simulator = physics.PtychographySimulator(manifest.preprocessing.crop_size)
        step = float(find(detector.SETTINGS, "cam1:ScanStep").initial) * 1e-6
        positions = physics.fermat_spiral_positions(self.args.points, step)
        truth = evaluate.mosaic_of(manifest.preprocessing.targets(
            simulator.object_patches(positions)), positions, manifest)
        if truth.images()[0].shape != images[0].shape:
            print(f"the mosaic ({images[0].shape}) is not laid out like the scan's ground "
                  f"truth ({truth.images()[0].shape}): not scored", file=sys.stderr)
            return {}
        scores = evaluate.image_scores(images, truth)
        picture = self.args.out / "mosaic.png"
        evaluate.save_pictures(picture, f"ptychoedge demo: {self.frames} frames at "
                               f"{self.args.rate:g} Hz, SSIM amplitude "
                               f"{scores['mosaic_amplitude_ssim']:.3f}, phase "
                               f"{scores['mosaic_phase_ssim']:.3f}", images, truth)
        return {**{k: round(v, 4) for k, v in scores.items()}, "picture": str(picture)}


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name, value in (("--rate", args.rate), ("--points", args.points),
                        ("--passes", args.passes), ("--max-instances", args.max_instances)):
        if not value > 0:
            raise SystemExit(f"ptychoedge demo: error: {name} must be positive, got {value}")
    refine = find(pipeline.KNOBS, "RefineSeconds")
    if args.refine and not refine.low <= args.refine <= refine.high:
        raise SystemExit(f"ptychoedge demo: error: --refine takes 0 or {refine.low:g} to "
                         f"{refine.high:g} s, got {args.refine}")
    demo = Demo(args)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: demo.quit.set())
    try:
        demo.start()
        if not demo.quit.is_set():
            demo.scan()
        if not demo.quit.is_set():
            result = demo.report()
            if args.refine and not demo.quit.is_set():
                demo.refine(result)
    finally:
        print("stopping the pipeline and the beamline", flush=True)
        demo.stop()
    return 130 if demo.quit.is_set() else 0
