"""Refinement: the kept frames' image made true through the physics (a part of the supervisor).

The live mosaic is the network's: fast, and only as true as the network. At the `Refine`
button, while the pipeline runs, it goes:

  Collecting  the frame ring writes the frames it keeps of the current scan (the last
              `AdaptFrames`) as a scan file, with the instrument of `AdaptInstrument`
              (the probe the beamline knows), or the running model's where it is empty;
  Refining    the refiner (inference/refiner.py), a child at the lowest CPU priority so
              inference keeps its cores, draws that scan with the running model, then
              refines the image for `RefineSeconds`, and that probe with it (from a flat
              object where the frames do not fit the model: inference/refine.py); it
              serves the image as it improves, which the image relay shows as
              `$(P)Refined:*`; its progress lines give RefineProgress_RBV and
              RefineError_RBV; then it refines the even and the odd frames apart (a
              third of `RefineSeconds` each), and serves the amplitude filtered to
              what the two agree on;
  Idle        again, the outcome in Message_RBV, with how much the probe moved (its
              overlap with the one given); RefinedResolution_RBV the finest half-period
              the two halves agree on; RefinedInstrument_RBV names the file of the
              refined object and instrument (`refined.cxi`, a file for
              `AdaptInstrument`); the refiner keeps serving its image until the next
              Refine or the IOC stops;
  Failed      the ring could not write, the refiner could not use the scan, or it died.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ptychoedge.iocs.news import News
from ptychoedge.iocs.processes import Child, last_json, log_tail, python_module, stop_all
from ptychoedge.iocs.ring_client import RingClient, RingPart
from ptychoedge.iocs.settings import Settings
from ptychoedge.pvdb import pipeline

log = logging.getLogger(__name__)

MIN_FRAMES = 10  # the fewest frames worth refining
# the refiner's progress line (inference/refiner.py PROGRESS)
PROGRESS = re.compile(r"refining: sweep (\d+), Fourier error ([-+.\deE]+|nan), ([.\d]+) of "
                      r"([.\d]+) s")


@dataclass
class RefineStatus:
    """What refinement shows: RefineState_RBV, RefineProgress_RBV, RefineError_RBV,
    RefinedResolution_RBV, RefinedInstrument_RBV."""

    state: str = "Idle"
    progress: float = 0.0
    error: float = float("nan")
    instrument: str = ""  # the file the refiner wrote: the refined object and instrument
    resolution: float = float("nan")  # nm: the finest half-period the halves agree on


class Refinement(RingPart):
    """The request, the ring's scan and the refiner child; driven by the supervisor's thread
    through `step`."""

    def __init__(self, prefix: str, ring: RingClient, work_dir: Path, model_dir: Path | None,
                 news: News):
        self.images = pipeline.refiner_images(prefix)
        super().__init__(ring, work_dir, news)
        self.model_dir = model_dir
        self.status = RefineStatus()
        self._requested = threading.Event()
        self._model = ""  # the model that draws the scan first
        self._seconds = 0.0
        self._refiner: Child | None = None

    def request(self) -> None:
        """The Refine button: refine the image of the frames kept now."""
        self._requested.set()

    def stop(self) -> None:
        """Stop the refiner (the IOC stops, or a new refinement starts)."""
        if self._refiner is not None:
            stop_all([self._refiner], 5.0)
            self._refiner = None

    def step(self, settings: Settings, running: str, now: float) -> None:
        """One look, once a second while the pipeline runs; `running` is the model the
        instances run."""
        match self.status.state:
            case "Idle" | "Failed":
                if self._requested.is_set() and not self.ring.busy:  # else after that write
                    self._requested.clear()
                    self._start(settings, running, now)
            case "Collecting":
                self._collect(now)
            case "Refining":
                self._watch()

    def stopped(self) -> None:
        """One look while the pipeline is stopped: its frame ring with it, but a refiner
        at work goes on."""
        if self.status.state == "Refining":
            self._watch()
        elif self.status.state == "Collecting":
            self._fail("the pipeline stopped while the frame ring wrote its frames")
        elif self._requested.is_set():
            self._requested.clear()
            self._fail("Refine needs the pipeline running: its frame ring keeps the frames")

    # -- the states ------------------------------------------------------------------

    def _start(self, settings: Settings, running: str, now: float) -> None:
        ring = self.ring.read()
        if ring is None:
            self._fail("the frame ring does not answer yet: Refine again in a moment")
            return
        if ring["kept"] < MIN_FRAMES:
            self._fail(f"only {ring['kept']} frames kept: Refine once a scan has streamed "
                       f"at least {MIN_FRAMES}")
            return
        self.stop()  # the last refinement's image goes with its refiner
        self._model, self._seconds = running, settings.refine_seconds
        self.status = RefineStatus("Collecting")
        self.ring.write(self, ring, self._scan, running, settings.adapt_instrument, now)
        self.news.say(f"refining: the frame ring writes its {ring['kept']} frames")

    def _collect(self, now: float) -> None:
        outcome = self.ring.outcome(now)
        if outcome is None:
            return
        error, written = outcome
        if error:
            self._fail(error)
            return
        log_path = self.work_dir / "refiner.log"
        log_path.unlink(missing_ok=True)
        model_dir = ["--model-dir", str(self.model_dir)] if self.model_dir else []
        self._refiner = Child("refiner", ["nice", "-n", "19", *python_module(
            "ptychoedge.inference.refiner", "--scan", str(self._scan), "--model", self._model,
            *model_dir, "--seconds", str(self._seconds), "--images", self.images,
            "--out", str(self.work_dir / "refined.cxi"))], log_path)
        self.status.state = "Refining"
        self.news.say(f"refining {written} frames for {self._seconds:.0f} s, from "
                      f"{self._model}'s image")
        log.info(self.news.message)

    def _watch(self) -> None:
        refiner = self._refiner
        assert refiner is not None and refiner.log_path is not None
        text = log_tail(refiner.log_path)
        found = PROGRESS.findall(text)
        if found:
            _, error, spent, whole = found[-1]
            self.status.progress = min(100.0, 100.0 * float(spent) / (float(whole) or 1.0))
            self.status.error = float(error)
        summary = last_json(text)
        if summary is not None:
            first, last = summary["fourier_error"]
            self.status = RefineStatus("Idle", 100.0, last, summary["written"])
            resolved = ""
            if "object_half_period" in summary:
                self.status.resolution = summary["object_half_period"] * 1e9
                resolved = (f"; resolved to {self.status.resolution:.0f} nm (amplitude "
                            f"{summary['amplitude_half_period'] * 1e9:.0f} nm, shown filtered)")
            self.news.say(f"refined {summary['frames']} frames in {summary['seconds']:.0f} s "
                          f"({summary['sweeps']} sweeps) from {summary['started_from']}: "
                          f"Fourier error {first:.3g} -> {last:.3g}; "
                          f"the probe refined (overlap with the one given "
                          f"{summary['probe_overlap_with_given']:.3f}): RefinedInstrument_RBV"
                          f"{resolved}")
            log.info(self.news.message)
            return
        code = refiner.returncode
        if code is not None:
            last_line = text.strip().splitlines()[-1:] or ["no output"]
            self.stop()
            self._fail(f"the refiner ended with code {code}: {last_line[0][-120:]}")
