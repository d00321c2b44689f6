"""Adaptation benchmark: the pipeline IOC learns a scan unlike its model, live (issue 13).

Starts a simulated beamline (`ptychoedge sim --probe zoneplate-defocus --sample
labyrinth`) and the pipeline IOC (`ptychoedge ioc`, one instance) on a model directory
holding a copy of the shipped model (made for another probe), with AdaptInstrument
naming a CXI instrument file with the zone plate's probe. With AutoAdapt on it streams
the detector's scan and measures:

  (1) the time from the residual alarm (State_RBV Misfit) to the better model in force
      (Model_RBV changes), and the time spent in each AdaptState_RBV on the way;
  (2) Mosaic:Amplitude and Mosaic:Phase (pvAccess NTNDArray) before the swap (the scan
      by the shipped model) and after the redraw (the same scan by the adapted model),
      each scored against the simulator's sample, rebuilt here from the same settings
      (inference/comparison.compare_images: SSIM, Pearson correlation and PSNR beside a
      flat image's, amplitude and phase apart);
  (3) the highest loss-free detector rate of the pipeline (every frame published, none
      missed) with no training, then with a training run held busy (a large AdaptEpochs
      and the Adapt button), side by side in the same run, and their ratio;
  (4) a picture of the mosaic before and after, and the truth.

Writes benchmark-logs/adapt/{report.json,adapt.png} (the processes' logs under logs/).

    python benchmarks/adapt.py [--quick] [--epochs 5] [--trial-seconds 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from p4p.client.thread import Context
from waiting import stop, wait

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.comparison import compare_images
from ptychoedge.inference.instrument import Instrument, write_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, copy_model, load_manifest
from ptychoedge.inference.mosaic import Mosaic
from ptychoedge.inference.reconstruct import save_pictures
from ptychoedge.pvdb.pipeline import ADAPT_STATES, collector_channels
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe
from ptychoedge.sim.sources import SourceSettings

OUT = Path("benchmark-logs/adapt")
PROBE, SAMPLE = "zoneplate-defocus", "labyrinth"
SCENE = SourceSettings(probe=PROBE, sample=SAMPLE)  # the detector's defaults, this scene
STARTUP = 180.0  # s for the instance to load on two shared cores
WATCHED = ("State_RBV", "AdaptState_RBV", "Model_RBV", "Residual_RBV", "AdaptProgress_RBV",
           "AdaptLoss_RBV", "AdaptModel_RBV", "Message_RBV")

_started = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {text}", flush=True)


class Bench:
    """The simulated beamline and the pipeline IOC, spoken to over pvAccess."""

    def __init__(self, args):
        tag = uuid.uuid4().hex[:6]
        self.d, self.p = f"badaptS{tag}:", f"badaptP{tag}:"
        self.work = args.out.resolve() / "run"
        shutil.rmtree(self.work, ignore_errors=True)
        self.logs, self.models, self.state = (self.work / name for name in
                                              ("logs", "models", "state"))
        for folder in (self.logs, self.models):
            folder.mkdir(parents=True)
        copy_model(DEFAULT_MODEL, MODEL_DIR, self.models)
        self.instrument = self.work / "zoneplate.cxi"  # what the beamline knows of its probe
        write_cxi(self.instrument, Instrument(
            physics.geometry(SCENE.size_x),
            named_probe(PROBE, SCENE.size_x, physics.OBJECT_PIXEL_SIZE),
            load_manifest(DEFAULT_MODEL).instrument.photons))
        self.ctx = Context("pva", nt=False)
        self.images = Context("pva")  # NTNDArray -> numpy
        self.children: list[subprocess.Popen] = []
        self.events: list[tuple[float, str, object]] = []  # (monotonic, PV, value)
        self.latest: dict[str, object] = {}
        self._lock = threading.Lock()
        self._subscriptions = []

    def start(self) -> None:
        self._start("sim", "sim", "--prefix", self.d, "--no-stage", "--probe", PROBE,
                    "--sample", SAMPLE, "--log-dir", str(self.logs))
        self._start("ioc", "ioc", "--prefix", self.p, "--input-channel", self.d + "Pva1:Image",
                    "--state-dir", str(self.state), "--model-dir", str(self.models))
        wait(lambda: self.alive() and self.get_d("cam1:DetectorState_RBV") == "Idle", 180,
             "the simulator")
        wait(lambda: self.alive() and self.get("State_RBV") is not None, 120,
             "the pipeline IOC")
        for name in WATCHED:
            self._subscriptions.append(self.ctx.monitor(
                self.p + name, lambda value, name=name: self._seen(name, value),
                notify_disconnect=True))

    def _start(self, name: str, *command: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.children.append(subprocess.Popen(
            [sys.executable, "-m", "ptychoedge.iocs.cli", *command], stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.logs,
            start_new_session=True))

    def alive(self) -> bool:
        """True while every child runs; exits with its log's tail when one has died."""
        for child in self.children:
            if child.poll() is not None:
                name = Path(child.args[3]).name
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"benchmark: {name} exited ({child.returncode}):\n{tail}")
        return True

    def _seen(self, name: str, value) -> None:
        if isinstance(value, Exception):
            return
        value = plain(value)
        with self._lock:
            if self.latest.get(name) != value:
                self.latest[name] = value
                self.events.append((time.monotonic(), name, value))

    def reached(self, state: str, since: float) -> float | None:
        """When AdaptState_RBV said `state` after `since` (monotonic), or None."""
        with self._lock:
            return next((t for t, name, v in self.events
                         if name == "AdaptState_RBV" and v == state and t > since), None)

    def get(self, name: str):
        try:
            return plain(self.ctx.get(self.p + name, timeout=3))
        except TimeoutError:
            return None

    def get_d(self, name: str):
        try:
            return plain(self.ctx.get(self.d + name, timeout=3))
        except TimeoutError:
            return None

    def put(self, name: str, value) -> None:
        self.ctx.put(self.p + name, value, timeout=5)

    def acquire(self, rate: float, frames: int | None = None) -> None:
        """Stream at `rate`: `frames` of them, or until `stop`."""
        mode = ("Continuous",) if frames is None else ("Multiple", ("cam1:NumImages", frames))
        settings = [("cam1:ImageMode", mode[0]), *mode[1:], ("cam1:AcquirePeriod", 1.0 / rate),
                    ("cam1:Acquire", 1)]
        for name, value in settings:
            self.ctx.put(self.d + name, value, timeout=5)

    def stop(self) -> None:
        self.ctx.put(self.d + "cam1:Acquire", 0, timeout=5)

    def collector_model(self) -> str:
        return self.ctx.get(collector_channels(self.p)["status"], timeout=3)["userStats"]["model"]

    def mosaic(self) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.asarray(self.images.get(self.p + f"Mosaic:{part}", timeout=10),
                                np.float32) for part in ("Amplitude", "Phase"))

    def drained(self, timeout: float = 60.0) -> None:
        wait(lambda: self.get_d("cam1:Acquire") == "Done", timeout, "the acquisition's end")
        wait(lambda: self.get("Backlog_RBV") == 0, timeout, "every frame published")

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        stop(self.children)
        self.ctx.close()
        self.images.close()


# -- (1) the adaptation's timeline -------------------------------------------------------

def timeline(bench: Bench, misfit_at: float, in_force_at: float) -> dict:
    """Seconds from the alarm to the new model, and in each AdaptState on the way."""
    spans: dict[str, float] = {}
    states = [(t, v) for t, name, v in bench.events if name == "AdaptState_RBV"]
    entered, state = misfit_at, "Idle"
    for t, value in states:
        if t <= misfit_at:
            state = value
            continue
        if t > in_force_at:
            break
        spans[state] = spans.get(state, 0.0) + t - entered
        entered, state = t, value
    spans[state] = spans.get(state, 0.0) + in_force_at - entered
    return {"misfit_to_model_in_force_s": in_force_at - misfit_at,
            "seconds_in_state": {s: round(spans[s], 2) for s in ADAPT_STATES if s in spans}}


# -- (2) scores against the truth -------------------------------------------------------

def placed_geometry(image: np.ndarray, mosaic: Mosaic) -> tuple[np.ndarray, tuple[int, int]]:
    """The coverage mask and the pixel of scan position 0 on `image`, a mosaic published
    over pvAccess (which carries neither), from `mosaic`, one rebuilt with the same
    positions: the placed regions' bounding boxes give the shift between the canvases."""
    placed = mosaic.images()[0] > 0
    rows, cols = np.nonzero(image != 0)
    rows_m, cols_m = np.nonzero(placed)
    dy, dx = rows.min() - rows_m.min(), cols.min() - cols_m.min()
    extent = (rows.max() - rows.min(), cols.max() - cols.min())
    if extent != (rows_m.max() - rows_m.min(), cols_m.max() - cols_m.min()):
        say(f"  warning: the published mosaic's placed region {extent} is not the rebuilt "
            f"one's; scores may be off")
    mask = np.zeros(image.shape, bool)
    coverage = mosaic.coverage()
    ys, xs = np.nonzero(coverage)
    keep = (ys + dy >= 0) & (ys + dy < image.shape[0]) & (xs + dx >= 0) & (xs + dx < image.shape[1])
    mask[ys[keep] + dy, xs[keep] + dx] = True
    zx, zy = mosaic.position_to_pixel(0.0, 0.0)
    return mask, (int(zx + dx), int(zy + dy))


def rebuilt(positions: np.ndarray, pixel: float, weight: np.ndarray) -> Mosaic:
    mosaic = Mosaic(pixel, weight)
    ones, zeros = np.ones(weight.shape, np.float32), np.zeros(weight.shape, np.float32)
    for x, y in positions:
        mosaic.add(ones, zeros, x, y)
    return mosaic


def scores_of(images, mosaic: Mosaic, truth, truth_pixel) -> tuple[dict, np.ndarray]:
    amplitude, phase = images
    mask, zero = placed_geometry(amplitude, mosaic)
    scores, reference = compare_images(amplitude, phase, mask, mosaic.pixel_size, zero, truth,
                                       truth_pixel)
    return {k: float(v) for k, v in scores.items()}, reference


def row(name: str, scores: dict) -> str:
    return (f"  {name:<30} " + "   ".join(
        f"{c[:5]}: SSIM {scores[f'{c}_ssim']:.3f}/{scores[f'flat_{c}_ssim']:.3f} "
        f"r {scores[f'{c}_correlation']:+.2f} PSNR {scores[f'{c}_psnr']:4.1f}/"
        f"{scores[f'flat_{c}_psnr']:4.1f} dB" for c in ("amplitude", "phase")))


# -- (3) loss-free rate ------------------------------------------------------------------

def trial(bench: Bench, rate: float, seconds: float) -> tuple[bool, dict]:
    """`rate` for `seconds`: whether every frame was published, none missed."""
    wait(lambda: bench.get("Backlog_RBV") == 0, 60, "the last trial drained")
    time.sleep(1.2)  # counters refresh once a second
    processed, missed = bench.get("FramesProcessed_RBV"), bench.get("FramesMissed_RBV")
    frames = max(int(rate * seconds), 1)
    progress = bench.get("AdaptProgress_RBV")
    started = time.monotonic()
    bench.acquire(rate, frames)
    time.sleep(0.5)
    wait(lambda: bench.get_d("cam1:Acquire") == "Done", seconds + 60, "the trial's end")
    taken = time.monotonic() - started
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:  # what is in flight, then fresh counters
        time.sleep(1.0)
        if (bench.get("Backlog_RBV") == 0
                and bench.get("FramesProcessed_RBV") - processed >= frames):
            break
    time.sleep(1.2)
    counts = {"frames": frames, "achieved_hz": round(frames / taken, 1),
              "published": bench.get("FramesProcessed_RBV") - processed,
              "missed": bench.get("FramesMissed_RBV") - missed,
              "backlog": bench.get("Backlog_RBV"),
              "residual": bench.get("Residual_RBV"),
              "adapt_state": bench.get("AdaptState_RBV"),
              "adapt_progress": [progress, bench.get("AdaptProgress_RBV")]}
    ok = counts["published"] == frames and counts["missed"] == 0 and counts["backlog"] == 0
    return ok, counts


def highest_rate(bench: Bench, start: float, step: float, seconds: float, trials: int,
                 label: str) -> tuple[float, list]:
    """Raise the rate by `step` while every frame comes through, then try once halfway
    between the last good and the first lossy rate (at most `trials` in all)."""
    best, rate, lossy, seen = 0.0, start, None, []

    def attempt(rate: float) -> bool:
        ok, counts = trial(bench, rate, seconds)
        seen.append({"rate": round(rate, 1), "ok": ok, **counts})
        say(f"  {label}: {rate:7.1f} Hz {'ok  ' if ok else 'LOST'} {counts}")
        return ok

    while len(seen) < trials - 1:
        if not attempt(rate):
            lossy = rate
            break
        best, rate = rate, rate * step
    if lossy is None:
        say(f"  {label}: no loss up to {best:.1f} Hz in {len(seen)} trials: a lower bound")
    elif best == 0.0:
        say(f"  {label}: frames lost even at {start:.1f} Hz")
    elif attempt((best + lossy) / 2):
        best = (best + lossy) / 2
    return best, seen


def bare_rate() -> float:
    """Frames per second of the shipped model alone, one thread, batch 8 (where to start)."""
    from pipeline import bare_rate as model_rate

    return model_rate(argparse.Namespace(backend="onnxruntime", precision="fp32",
                                         model=DEFAULT_MODEL, model_dir=MODEL_DIR, threads=1,
                                         batch=8))


# -- the run -------------------------------------------------------------------------------

def adaptation(bench: Bench, args, report: dict, pictures: dict) -> str:
    """(1) and (2): AutoAdapt on a streaming scan; the adapted model's name."""
    truth_sim = SCENE.simulator()
    truth, truth_pixel = truth_sim.sample, truth_sim.pixel_size
    positions = SCENE.scan_positions()
    bench.put("AdaptInstrument", str(bench.instrument))
    bench.put("AdaptFrames", args.adapt_frames)
    bench.put("AdaptEpochs", args.epochs)
    bench.put("AutoAdapt", "On")
    bench.put("Run", "Run")
    say("pipeline starting (one instance)")
    wait(lambda: bench.get("State_RBV") in ("Running", "Misfit"), STARTUP, "the pipeline")
    running = bench.get("Model_RBV")
    say(f"pipeline running {running}; streaming the scan at {args.stream_rate:g} Hz")
    bench.acquire(args.stream_rate)
    wait(lambda: bench.latest.get("State_RBV") == "Misfit", 120, "the residual alarm")
    misfit_at = next(t for t, name, v in reversed(bench.events)
                     if name == "State_RBV" and v == "Misfit")
    residual_before = bench.get("Residual_RBV")
    say(f"Misfit: residual {residual_before:.3f} ({bench.get('Message_RBV')})")
    wait(lambda: bench.reached("Training", misfit_at), 120, "training to start")
    say(f"Training ({bench.get('Message_RBV')}); the scan stops, the mosaic drains")
    bench.stop()
    bench.drained()
    time.sleep(2.0)  # the collector's display period
    before = bench.mosaic()
    say(f"mosaic before the swap: {before[0].shape}")
    if bench.collector_model() != running:
        say("  warning: the new model was in force before the mosaic was read")
    last = -10.0
    model = None
    deadline = time.monotonic() + args.adapt_timeout
    while time.monotonic() < deadline:
        model = bench.latest.get("Model_RBV")
        state = bench.latest.get("AdaptState_RBV")
        if model != running or state in ("Idle", "Failed"):
            break
        if time.monotonic() - last >= 10.0:
            last = time.monotonic()
            say(f"  {state}: {bench.latest.get('AdaptProgress_RBV', 0):.0f}% loss "
                f"{bench.latest.get('AdaptLoss_RBV', float('nan')):.4f}")
        time.sleep(0.2)
    if model == running:
        raise SystemExit(f"benchmark: no new model in force: {bench.get('AdaptState_RBV')}, "
                         f"{bench.get('Message_RBV')}")
    in_force_at = next(t for t, name, v in bench.events if name == "Model_RBV" and v == model)
    times = timeline(bench, misfit_at, in_force_at)
    say(f"{model} in force {times['misfit_to_model_in_force_s']:.1f} s after the alarm; "
        f"by state: {times['seconds_in_state']}")
    wait(lambda: bench.collector_model() == model, 60, "the collector told of the new model")
    time.sleep(2.0)
    after = bench.mosaic()
    say(f"mosaic after the redraw: {after[0].shape}")
    time.sleep(3.0)  # what AutoAdapt does next, with the alarm still up and no new frame
    again = bench.reached("Collecting", in_force_at)
    if again:
        say(f"  note: AutoAdapt started again {again - in_force_at:.1f} s after the swap, on "
            f"{model}, with no frame through it yet ({bench.get('Message_RBV')})")
    bench.put("AutoAdapt", "Off")
    wait(lambda: bench.latest.get("AdaptState_RBV") in ("Idle", "Failed"), args.adapt_timeout,
         "adaptation done")
    if again:
        say(f"  that adaptation ended: {bench.get('Message_RBV')}")

    shipped = load_manifest(running, bench.models)
    adapted = load_manifest(model, bench.models)
    redraw = bench.state / "adapt" / "redraw.npz"
    redrawn = (Mosaic.load(redraw) if redraw.is_file() else
               rebuilt(positions, adapted.object_pixel_size, adapted.illumination()))
    if redrawn.images()[0].shape != after[0].shape:
        redrawn = rebuilt(positions, adapted.object_pixel_size, adapted.illumination())
    before_scores, reference = scores_of(before, rebuilt(
        positions, shipped.object_pixel_size, shipped.illumination()), truth, truth_pixel)
    after_scores, _ = scores_of(after, redrawn, truth, truth_pixel)
    print("  columns: SSIM/flat SSIM, Pearson r, PSNR/flat PSNR", flush=True)
    print(row(f"before ({running})", before_scores), flush=True)
    print(row(f"after ({model})", after_scores), flush=True)
    pictures[f"before: {running}"] = before
    pictures[f"after: {model} (redraw)"] = after
    seen = np.abs(reference) > 0
    covered = (before[0] != 0) & seen
    pictures["truth (where the scan reached)"] = (np.abs(reference) * covered,
                                                   np.angle(reference) * covered)
    np.savez_compressed(args.out / "mosaics.npz", before_amplitude=before[0],
                        before_phase=before[1], after_amplitude=after[0], after_phase=after[1],
                        truth_on_before_canvas=reference)
    check = adapted.training.get("check", {})
    report["adaptation"] = {
        "running": running, "adapted": model, **times, "residual_at_alarm": residual_before,
        "check": check, "adapt_frames": args.adapt_frames, "adapt_epochs": args.epochs,
        "stream_rate_hz": args.stream_rate,
        "adapted_again_after_swap_s": (again - in_force_at) if again else None,
        "events": [(round(t - misfit_at, 2), name, v) for t, name, v in bench.events
                   if name in ("State_RBV", "AdaptState_RBV", "Model_RBV")]}
    report["scores"] = {"before": before_scores, "after": after_scores}
    return model


def rates(bench: Bench, args, report: dict, start: float) -> None:
    """(3): the loss-free rate without, then with a training run in progress."""
    say(f"rate search without training (from {start:.1f} Hz, x{args.step:g}, "
        f"{args.trial_seconds:g} s trials)")
    idle_rate, idle_trials = highest_rate(bench, start, args.step, args.trial_seconds,
                                          args.trials, "no training")
    say("a training run held busy: AdaptEpochs 1000, the Adapt button")
    bench.put("AdaptFrames", 100)
    bench.put("AdaptEpochs", 1000)
    pressed = time.monotonic()
    bench.put("Adapt", 1)
    wait(lambda: bench.reached("Collecting", pressed), 30, "collecting")
    bench.acquire(args.stream_rate)
    wait(lambda: bench.reached("Training", pressed), 120, "training to start")
    bench.stop()
    bench.drained()
    say(f"training ({bench.get('Message_RBV')}); rate search with it")
    busy_rate, busy_trials = highest_rate(bench, start, args.step, args.trial_seconds,
                                          args.trials, "training")
    still = bench.get("AdaptState_RBV")
    progress = bench.get("AdaptProgress_RBV")
    if still != "Training":
        say(f"  warning: training was not in progress to the end ({still})")
    ratio = busy_rate / idle_rate if idle_rate else float("nan")
    say(f"loss-free rate: {idle_rate:.1f} Hz without training, {busy_rate:.1f} Hz with it: "
        f"ratio {ratio:.2f}")
    print("  | rate (Hz) | published in time, no training | with training |", flush=True)
    print("  | --- | --- | --- |", flush=True)
    busy_by_rate = {t["rate"]: t for t in busy_trials}
    for t in idle_trials:
        other = busy_by_rate.get(t["rate"])
        print(f"  | {t['rate']:.1f} | {t['published']}/{t['frames']} | "
              + (f"{other['published']}/{other['frames']}" if other else "-") + " |", flush=True)
    report["rates"] = {"instances": 1, "without_training_hz": idle_rate,
                       "with_training_hz": busy_rate, "ratio": ratio,
                       "training_state_at_end": still, "training_progress_at_end": progress,
                       "trials_without": idle_trials, "trials_with": busy_trials,
                       "trial_seconds": args.trial_seconds, "step": args.step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short settings: 4 s trials, at most 7 per search")
    parser.add_argument("--epochs", type=int, default=None, help="AdaptEpochs (default 20)")
    parser.add_argument("--adapt-frames", type=int, default=None,
                        help="AdaptFrames (default 400: one pass of the detector's scan)")
    parser.add_argument("--stream-rate", type=float, default=50.0, metavar="HZ",
                        help="detector rate while adapting")
    parser.add_argument("--adapt-timeout", type=float, default=900.0, metavar="S")
    parser.add_argument("--start-rate", type=float, default=None, metavar="HZ",
                        help="first rate of each search (default: the bare model's; one instance "
                             "runs more threads than the bare model's one)")
    parser.add_argument("--step", type=float, default=None, help="rate factor per trial")
    parser.add_argument("--trial-seconds", type=float, default=None)
    parser.add_argument("--trials", type=int, default=None, help="most trials per search")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    # a fresh network (the shipped one cannot learn from frames) learnt a labyrinth's phase
    # in 20 passes over 400 frames; 5 or 10 gave one patch for every frame. All 400: the
    # scores below compare the redrawn scan with the detector's whole scan
    quick = {"adapt_frames": 400, "epochs": 20, "step": 1.5, "trial_seconds": 4.0, "trials": 7}
    full = {"adapt_frames": 400, "epochs": 20, "step": 1.3, "trial_seconds": 8.0, "trials": 12}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out.mkdir(parents=True, exist_ok=True)
    bare = bare_rate()
    start = args.start_rate or bare
    say(f"bare model {DEFAULT_MODEL}: {bare:.1f} frames/s (onnxruntime fp32, batch 8, "
        f"1 thread)")
    report: dict = {"command": " ".join(sys.argv), "quick": args.quick, "bare_rate": bare}
    pictures: dict = {}
    say("starting the simulated beamline and the pipeline IOC")
    bench = Bench(args)
    try:
        bench.start()
        adaptation(bench, args, report, pictures)
        rates(bench, args, report, start)
    finally:
        say("stopping")
        bench.close()
        (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if pictures:
            save_pictures(args.out / "adapt.png", "the scan's mosaic before and after "
                          "adaptation", pictures)
    say(f"wrote {args.out}/report.json and adapt.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
