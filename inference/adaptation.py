"""Adapting a running model to the scan it streams: learn, check, then keep or set aside.

A new model learns the scan self-supervised (training.py, `--scan SCAN`: frames,
positions and probe, no labels). It starts from the running model's weights when that
network was made to learn this way (batch normalisation, free output), else from fresh
weights of the same size that are (`--start`): a network without normalisation, like
the shipped one, barely moves from its old answer in the minutes adaptation has. A fresh
network sees the detector as the running model does (orientation, beam centre) over a
crop of its input size (no binning: the forward model is exact).

Every tenth frame is held back from training (training.HELD_OUT_EVERY); on those, each
model's diffraction residual is taken as the pipeline takes it, through the model's own
preprocessing and probe. The new model is kept in the model directory, ready for the
pipeline's `Model` knob, only when its median residual is below `margin` (a fraction)
under both the running model's and an empty object's under the new probe (a model near
that has learnt the probe, not the sample); otherwise it goes to `rejected/` beside it,
with the reason. Nor is one kept that gives nearly one answer for every frame: where the
scan's frames vary well beyond their noise (a sample that scatters), its answers must
explain at least EXPLAINS of that variation (quality.variation, over every frame: a
network that learnt only the sample's mean answer beats an empty object on the residual,
and shows a flat image). Either way its manifest records the check beside its lineage.

    ptychoedge adapt --scan SCAN.cxi --from RUNNING [--model-dir DIR] [--name NEW]
        [--start auto|running|fresh]

Exit status 0: kept; 1: set aside; 2: refused (the reason on stderr). The last line on
stdout is the check as JSON, for the pipeline IOC that runs this as a child.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ptychoedge.inference import training, training_data
from ptychoedge.inference.backends import open_model
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.instrument import InstrumentError
from ptychoedge.inference.manifest import MODEL_DIR, Manifest, ModelError, load_model, save_model
from ptychoedge.inference.model import PtychoNN
from ptychoedge.inference.model_shape import ModelShape
from ptychoedge.inference.quality import variation
from ptychoedge.inference.reconstruct import reconstruct
from ptychoedge.inference.scan_file import load_scan
from ptychoedge.pvdb.processors import EXPLAINS, one_answer

log = logging.getLogger(__name__)
REJECTED = "rejected"  # the model directory's folder for models that did not pass the check
BATCH, LEARNING_RATE = 16, 2e-3  # the self-supervised recipe benchmarks/fidelity.py measures


@dataclass
class Check:
    held_back: int  # frames neither model was trained on
    running_residual: float  # medians on those frames
    new_residual: float
    empty_residual: float  # an empty object (amplitude 1, phase 0) under the new probe
    frames_over_noise: float  # the scan's variation beyond its noise, over the noise
    explained: float  # the share of that variation the new model's answers explain
    margin: float
    accepted: bool
    reason: str


def held_back_residuals(model: PtychoNN, manifest: Manifest,
                        frames: training_data.Part) -> dict[str, float]:
    """Median residuals on the scan's held-back `frames` (read through `manifest`'s
    preprocessing), through its probe: of `model` and of an empty object; and how many."""
    held_back = frames.subset(np.arange(len(frames.inputs)) % training.HELD_OUT_EVERY == 0)
    predicted = training.predict(model, held_back.inputs)
    empty = np.zeros_like(predicted)
    empty[:, 0] = 1.0

    def median(patches: np.ndarray) -> float:
        return training.residual_figures(manifest, held_back.counts, patches)["residual_p50"]
    return {"model": median(predicted), "empty": median(empty), "frames": len(predicted)}


def check(running: tuple[PtychoNN, Manifest], new: tuple[PtychoNN, Manifest], scan: Path,
          margin: float) -> Check:
    """Whether `new` explains the held-back frames clearly better than the running model
    and than an empty object under its probe (a model near that learnt the probe, not the
    sample), and tells the frames apart where they differ: over every frame, since the
    question is whether it tells them apart at all (how truly, on frames it did not learn,
    is the held-back residual's to say)."""
    def frames_for(manifest: Manifest) -> training_data.Part:
        return training_data.recorded_scan(scan, manifest.preprocessing,
                                           manifest.object_pixel_size)
    frames = frames_for(new[1])
    masks = running[1].preprocessing.mask, new[1].preprocessing.mask
    # a running model without the detector's mask reads its gaps as counts, as it does live
    read_alike = (running[1].preprocessing == new[1].preprocessing
                  and running[1].object_pixel_size == new[1].object_pixel_size
                  and (masks[0] is masks[1] or (None not in masks
                                                 and np.array_equal(*masks))))
    before = held_back_residuals(*running, frames if read_alike else frames_for(running[1]))
    before = before["model"]
    figures = held_back_residuals(*new, frames)
    after, empty = figures["model"], figures["empty"]
    predicted = training.predict(new[0], frames.inputs)
    over_noise, explained = variation(new[1].probe, frames.counts, predicted[:, 0],
                                      predicted[:, 1], new[1].preprocessing.measured())
    better = after < (1 - margin) * min(before, empty)
    one = one_answer(over_noise, explained)
    reason = (f"residual on {figures['frames']} held-back frames {after:.3f}: "
              f"{'passed' if better else 'failed'} {1 - margin:.0%} of {before:.3f} for "
              f"{running[1].name} and of {empty:.3f} for an empty object; the scan's frames vary "
              f"{over_noise:.1f}x their noise and its answers explain {explained:.1%} of that")
    if one:
        reason += (f", under the {EXPLAINS:.0%} needed: nearly one answer for every frame "
                   f"(the sample's mean, not its structure)")
    return Check(figures["frames"], before, after, empty, over_noise, explained, margin,
                 better and not one, reason)


def adapt(args: argparse.Namespace) -> tuple[Check, Path]:
    """Train, check and save as `args` say; the check and where the model went. A kept
    model redraws the scan (`args.redraw`)."""
    running = load_model(args.running, args.model_dir)
    start = args.start if args.start != "auto" else (
        "running" if learns_from_frames(running[0].shape) else "fresh")
    recipe = ["--scan", str(args.scan), "--name", args.name, "--epochs", str(args.epochs),
              "--batch-size", str(BATCH), "--lr", str(LEARNING_RATE), "--seed", str(args.seed),
              *(["--from", args.running, "--model-dir", str(args.model_dir)]
                if start == "running" else fresh_network(running[1]))]
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    log.info("learning the scan from %s weights",
             f"{args.running}'s" if start == "running" else "fresh")
    model, manifest = training.train(parser.parse_args(recipe))
    manifest.training["parent"] = {"name": args.running,
                                   "weights_sha256": running[1].sha256["weights"],
                                   "weights_kept": start == "running"}
    log.info("checking on the held-back frames")  # the pipeline IOC's cue (iocs/adaptation)
    verdict = check(running, (model, manifest), args.scan, args.margin)
    manifest.training["check"] = asdict(verdict)
    directory = args.model_dir if verdict.accepted else args.model_dir / REJECTED
    path = save_model(model, manifest, directory)
    if verdict.accepted and args.redraw:
        redraw(args.scan, args.name, args.model_dir, args.redraw)
    return verdict, path


def learns_from_frames(shape: ModelShape) -> bool:
    """Whether a network of `shape` learns from frames alone in minutes."""
    return shape.norm == "batch" and shape.output == "free"


def fresh_network(running: Manifest) -> list[str]:
    """Training options for a fresh network that sees the detector as `running` does."""
    orientation = running.preprocessing.orientation
    options = ["--input-size", str(running.shape.input_size), "--width",
               str(running.shape.width), "--fold", str(running.shape.fold), "--norm",
               "batch", "--output", "free"]
    options += [flag for flag, on in (("--transpose", orientation.transpose),
                                      ("--flip-x", orientation.flip_x),
                                      ("--flip-y", orientation.flip_y)) if on]
    if orientation.beam_x is not None:
        options += ["--beam-center", str(orientation.beam_x), str(orientation.beam_y)]
    return options


def redraw(scan: Path, model: str, model_dir: Path, path: Path) -> None:
    """The scan reconstructed and stitched by `model` as the pipeline runs it, saved at `path`
    for the collector to go on from (inference/mosaic_processor.py)."""
    frames, positions = load_scan(scan)
    backend, manifest = open_model("onnxruntime", "fp32", model, model_dir, threads=1)
    reconstruct(frames, positions, Reconstructor(backend, manifest)).mosaic.save(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", type=Path, required=True, metavar="FILE.cxi",
                        help="the scan to learn from: frames, positions, probe, geometry")
    parser.add_argument("--from", dest="running", required=True, metavar="NAME",
                        help="the running model, which the new one starts from")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="where the running model is and the new one goes "
                             "(default: the shipped models)")
    parser.add_argument("--name", help="the new model's name (default: RUNNING-adapted-N)")
    parser.add_argument("--start", choices=("auto", "running", "fresh"), default="auto",
                        help="from the running model's weights or fresh ones (default "
                             "%(default)s: the running model's if its network learns from "
                             "frames, batch norm and free output)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="passes over the scan's frames (default %(default)s)")
    parser.add_argument("--margin", type=float, default=0.2,
                        help="how much lower (a fraction) the new model's residual must be "
                             "(default %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads: leave the others to inference (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redraw", type=Path, metavar="FILE.npz",
                        help="a kept model also stitches the scan anew, saved here")


def free_name(running: str, directory: Path) -> str:
    """`RUNNING-adapted-N` with the first N that names no model in `directory` or aside."""
    taken = {path.name for folder in (directory, directory / REJECTED) if folder.is_dir()
             for path in folder.glob("*.json")}
    number = 1
    while f"{running}-adapted-{number}.json" in taken:
        number += 1
    return f"{running}-adapted-{number}"


def refusal(args: argparse.Namespace) -> str | None:
    if not 0 <= args.margin < 1:
        return "--margin must be in [0, 1)"
    if min(args.epochs, args.threads) < 1:
        return "--epochs and --threads must be at least 1"
    if (args.model_dir / f"{args.name}.json").exists():
        return f"a model {args.name!r} is already in {args.model_dir}: choose another --name"
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.name = args.name or free_name(args.running, args.model_dir)
    problem = refusal(args)
    if problem:
        print(f"ptychoedge adapt: error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(min(args.threads, len(os.sched_getaffinity(0))))
    try:
        verdict, path = adapt(args)
    except (InstrumentError, ModelError, training_data.ScanError) as error:
        print(f"ptychoedge adapt: error: {error}", file=sys.stderr)
        return 2
    print(("kept " if verdict.accepted else "set aside ") + f"{path}: {verdict.reason}")
    print(json.dumps({"model": args.name, "path": str(path), **asdict(verdict)}))
    return 0 if verdict.accepted else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge adapt", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
