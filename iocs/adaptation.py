"""Adaptation: the running model learns the scan it streams (a part of the supervisor).

While the pipeline runs, the frame ring (inference/frame_ring.py) keeps the last
`AdaptFrames` frames of the current scan beside the instances. On a request (the
`Adapt` button, or `AutoAdapt` once the residual guard has said Misfit for AUTO_AFTER
seconds) it goes:

  Collecting  until the ring holds AdaptFrames frames (or MIN_FRAMES once the input is
              quiet), then the ring writes them as a scan;
  Training    `ptychoedge adapt` learns that scan (from the running model or afresh), as
              a child with one thread at the lowest CPU priority, so inference keeps its cores;
              its progress line gives AdaptProgress_RBV and AdaptLoss_RBV;
  Checking    the same child compares the two models on frames held back from training;
  Swapping    a model that passed is put to the `Model` knob by the IOC (the instances load
              it as at any put, without losing a frame); the trainer also redrew the
              scan with it, which the collector's mosaic starts from, so the screen
              shows the scan by the new model, not a mix; done once the instances run
              it and the collector draws with it;
  Idle        again, the outcome in Message_RBV; a model that did not pass stays aside
              (`MODEL_DIR/rejected/`), the running one in place;
  Failed      the ring could not write or the trainer died: the running model stays.

The running model serves throughout. The trainer dies with the IOC; a restart finds the
mark it left and says the adaptation was cut short.
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

log = logging.getLogger(__name__)

AUTO_AFTER = 10.0  # s of Misfit before AutoAdapt starts
MIN_FRAMES = 20  # the fewest frames worth learning from
PROGRESS = re.compile(r"epoch (\d+)/(\d+)\s+batch (\d+)/(\d+)\s+loss ([-+.\deE]+|nan)")
CHECKING = "checking on"  # what the trainer logs when training is over (inference/adaptation)


@dataclass
class AdaptStatus:
    """What adaptation shows: AdaptState_RBV, AdaptProgress_RBV, AdaptLoss_RBV, AdaptModel_RBV."""

    state: str = "Idle"
    progress: float = 0.0
    loss: float = float("nan")
    model: str = ""  # the model it made last (kept or set aside)


class Adaptation(RingPart):
    """Requests, the ring's scan, the trainer child, and the swap; driven by the supervisor's
    thread through `step`."""

    def __init__(self, ring: RingClient, work_dir: Path, model_dir: Path | None, news: News):
        super().__init__(ring, work_dir, news)
        self.model_dir = model_dir
        self.status = AdaptStatus()
        self._requested = threading.Event()
        self._parent = ""  # the model being adapted
        self._trainer: Child | None = None
        self._misfit_since: float | None = None
        self._auto_tried: set[str] = set()  # models AutoAdapt adapted once already
        if self._mark.exists():
            self.news.say(f"an adaptation of {self._mark.read_text().strip()} was cut short "
                          f"by a restart; the running model stays")
            self._mark.unlink()

    @property
    def _mark(self) -> Path:
        return self.work_dir / "training"

    def redrawn(self, model: str) -> str:
        """The scan as `model` redrew it (a mosaic file), or "" if adaptation made no such."""
        path = self._redraw
        return str(path) if model == self.status.model and path.is_file() else ""

    def request(self) -> None:
        """The Adapt button: adapt the running model on the frames kept now."""
        self._requested.set()

    def stop(self) -> None:
        """Stop a trainer at work (the IOC stops): the running model stays."""
        if self._trainer is not None:
            stop_all([self._trainer], 5.0)
            self._trainer = None
            self._mark.unlink(missing_ok=True)

    def step(self, settings: Settings, running: str, drawing: str, misfit: bool,
             input_rate: float, now: float) -> None:
        """One look, once a second while the pipeline runs: `running` is the model the
        instances run, `drawing` the one the collector's mosaic is of."""
        self._misfit_since = (self._misfit_since or now) if misfit else None
        match self.status.state:
            case "Idle" | "Failed":
                self._maybe_start(settings, running, now)
            case "Collecting":
                self._collect(settings, input_rate, now)
            case "Training" | "Checking":
                self._watch_trainer()
            case "Swapping":  # over once the mosaic on the screen is the redrawn scan
                if running == drawing == self.status.model:
                    self.status.state = "Idle"
                    self.news.say(f"adapted: now running {running} (was {self._parent})")

    def stopped(self) -> None:
        """The pipeline stopped: frames still being collected will not come."""
        if self.status.state == "Collecting":
            self._fail(f"the pipeline stopped while collecting frames; still {self._parent}")

    # -- the states ------------------------------------------------------------------

    def _maybe_start(self, settings: Settings, running: str, now: float) -> None:
        by_button = self._requested.is_set()
        self._requested.clear()
        held = self._misfit_since is not None and now - self._misfit_since >= AUTO_AFTER
        auto = settings.auto_adapt and held and running not in self._auto_tried
        if not (by_button or auto):
            return
        if self.model_dir is None:
            self._fail("adaptation needs a model directory it may write to: start the IOC "
                       "with --model-dir DIR")
            return
        if auto:
            self._auto_tried.add(running)
        self._parent = running
        self.status = AdaptStatus("Collecting", model=self.status.model)
        self.news.say(f"adapting {running}: collecting frames"
                      + ("" if by_button else " (AutoAdapt: the frames do not fit it)"))
        log.info(self.news.message)

    def _collect(self, settings: Settings, input_rate: float, now: float) -> None:
        if self.ring.writing_for(self):
            outcome = self.ring.outcome(now)
            if outcome is not None:
                error, written = outcome
                if error:
                    self._fail(error)
                else:
                    self._train(settings, written)
            return
        ring = None if self.ring.busy else self.ring.read()  # busy: another part's write
        if ring is None:
            return
        kept = ring["kept"]
        if kept >= settings.adapt_frames or (kept >= MIN_FRAMES and input_rate == 0):
            self.ring.write(self, ring, self._scan, self._parent, settings.adapt_instrument,
                            now)

    def _train(self, settings: Settings, frames: int) -> None:
        self._mark.write_text(self._parent + "\n")
        log_path = self.work_dir / "trainer.log"
        for stale in (log_path, self._redraw):
            stale.unlink(missing_ok=True)
        self._trainer = Child("trainer", ["nice", "-n", "19", *python_module(
            "ptychoedge.inference.adaptation", "--scan", str(self._scan), "--from", self._parent,
            "--model-dir", str(self.model_dir), "--epochs", str(settings.adapt_epochs),
            "--threads", "1", "--redraw", str(self._redraw))], log_path)
        self.status.state = "Training"
        self.news.say(f"adapting {self._parent}: training on {frames} frames")
        log.info(self.news.message)

    def _watch_trainer(self) -> None:
        trainer = self._trainer
        assert trainer is not None and trainer.log_path is not None
        text = log_tail(trainer.log_path)
        found = PROGRESS.findall(text)
        if found:
            epoch, epochs, batch, batches, loss = found[-1]
            done = (int(epoch) - 1) * int(batches) + int(batch)
            self.status.progress = 100.0 * done / (int(epochs) * int(batches))
            self.status.loss = float(loss)
        if CHECKING in text:
            self.status.state = "Checking"
        code = trainer.returncode
        if code is None:
            return
        trainer.close()
        self._trainer = None
        self._mark.unlink(missing_ok=True)
        outcome = last_json(text)
        if code == 0 and outcome is not None:
            self.status.state, self.status.model = "Swapping", outcome["model"]
            self.news.say(f"adapted {self._parent}: {outcome['reason']}; swapping in "
                          f"{outcome['model']}")
        elif code == 1 and outcome is not None:
            self.status.state, self.status.model = "Idle", outcome["model"]
            self.news.say(f"kept {self._parent}: {outcome['model']} set aside, {outcome['reason']}")
        else:
            last = text.strip().splitlines()[-1:] or ["no output"]
            self._fail(f"the trainer ended with code {code} ({last[0][-120:]}); still running "
                       f"{self._parent}")
            return
        log.info(self.news.message)

    # -- helpers -------------------------------------------------------------------

    @property
    def _redraw(self) -> Path:
        return self.work_dir / "redraw.npz"
