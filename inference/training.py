"""`ptychoedge train`: PtychoNN on simulated scans, with ground truth from the physics.

Training frames come from procedural samples the live simulator never shows
(its default sample is seed 0); validation uses another unseen sample. Loss is
the mean absolute error of amplitude and phase, as in PtychoNN. The result is
written as weights plus a manifest (see manifest.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, Manifest, save_model
from ptychoedge.inference.metrics import mean_psnr, mean_ssim
from ptychoedge.inference.model import ModelShape, PtychoNN, count_parameters
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.sim import physics

log = logging.getLogger("ptychoedge.train")

PROBE = {"size": 128, "diameter_px": 64, "defocus": 6.0}  # the simulator's default probe
TRAINING_SEEDS = (101, 102, 103, 104)
VALIDATION_SEED = 201
CROP_SIZE = 128  # the simulator's detector
SCAN_RADIUS = 3e-6  # m: positions drawn over the region the live scan covers


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return value
    return parse


def _input_size(text: str) -> int:
    size = _positive(int)(text)
    try:
        ModelShape(size)
        Preprocessing(CROP_SIZE, size)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=MODEL_DIR,
                        help="where to write <name>.pt and <name>.json (default: the shipped "
                             "models)")
    parser.add_argument("--input-size", type=_input_size, default=64,
                        help=f"network input in pixels: the {CROP_SIZE}x{CROP_SIZE} centre of "
                             "the frame binned down to it (default %(default)s)")
    parser.add_argument("--width", type=_positive(int), default=16,
                        help="channels of the first level (PtychoNN: 32; default %(default)s)")
    parser.add_argument("--samples", type=_positive(int), default=8000,
                        help="training frames (default %(default)s)")
    parser.add_argument("--validation", type=_positive(int), default=400,
                        help="validation frames, from a sample of its own (default %(default)s)")
    parser.add_argument("--epochs", type=_positive(int), default=8,
                        help="passes over the training frames (default %(default)s)")
    parser.add_argument("--batch-size", type=_positive(int), default=32,
                        help="frames per step (default %(default)s)")
    parser.add_argument("--lr", type=_positive(float), default=1e-3,
                        help="peak learning rate of the one-cycle schedule (default %(default)s)")
    parser.add_argument("--photons", type=_positive(float), default=1e6,
                        help="photons per frame (default %(default)g)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of positions, noise and weights (default %(default)s)")


def make_dataset(preprocessing: Preprocessing, seeds: tuple[int, ...], count: int,
                 photons: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs and targets of `count` frames at random positions over `seeds` samples."""
    probe = physics.make_probe(**PROBE)
    inputs, targets = [], []
    per_sample = -(-count // len(seeds))
    for seed in seeds:
        simulator = physics.PtychographySimulator(preprocessing.crop_size, photons=photons,
                                                  seed=seed, probe=probe)
        positions = rng.uniform(-SCAN_RADIUS, SCAN_RADIUS, size=(per_sample, 2))
        for start in range(0, per_sample, 256):
            frames, truth = simulator.frames(positions[start:start + 256], rng=rng)
            inputs.append(preprocessing.frames(frames))
            targets.append(preprocessing.targets(truth))
    return np.concatenate(inputs)[:count], np.concatenate(targets)[:count]


def validation_metrics(model: PtychoNN, inputs: np.ndarray, targets: np.ndarray) -> dict:
    with torch.inference_mode():
        predicted = np.concatenate([model(torch.from_numpy(inputs[i:i + 64])).numpy()
                                    for i in range(0, len(inputs), 64)])
    metrics = {}
    for channel, name, data_range in ((0, "amplitude", 1.0), (1, "phase", 2 * np.pi)):
        got, want = predicted[:, channel], targets[:, channel]
        metrics[f"{name}_mae"] = float(np.abs(got - want).mean())
        metrics[f"{name}_ssim"] = mean_ssim(got, want, data_range)
        metrics[f"{name}_psnr"] = mean_psnr(got, want, data_range)
    return metrics


class Progress:
    """One line on stderr, rewritten in place: epoch, batch, loss, rate, time left."""

    def __init__(self, epochs: int, batches: int, frames: int):
        self.epochs, self.batches, self.total = epochs, batches, epochs * frames
        self.done, self.started, self.shown = 0, time.monotonic(), 0.0

    def step(self, epoch: int, batch: int, loss: float, frames: int) -> None:
        self.done += frames
        now = time.monotonic()
        if now - self.shown < 1.0 and self.done < self.total:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate
        sys.stderr.write(f"\repoch {epoch}/{self.epochs}  batch {batch}/{self.batches}  "
                         f"loss {loss:.4f}  {rate:6.0f} frames/s  ETA {left:5.0f} s ")
        sys.stderr.flush()


def train(args: argparse.Namespace) -> tuple[PtychoNN, Manifest]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    shape = ModelShape(args.input_size, args.width)
    preprocessing = Preprocessing(crop_size=CROP_SIZE, input_size=args.input_size)
    started = time.monotonic()
    log.info("simulating %d training and %d validation frames", args.samples, args.validation)
    train_x, train_y = make_dataset(preprocessing, TRAINING_SEEDS, args.samples, args.photons,
                                    rng)
    valid_x, valid_y = make_dataset(preprocessing, (VALIDATION_SEED,), args.validation,
                                    args.photons, rng)
    model = PtychoNN(shape)
    log.info("training %s: %d weights, %d epochs, %d threads", shape, count_parameters(model),
             args.epochs, torch.get_num_threads())
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = -(-len(train_x) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr,
                                                   total_steps=args.epochs * batches)
    loss_fn = nn.L1Loss()
    progress = Progress(args.epochs, batches, len(train_x))
    x_all, y_all = torch.from_numpy(train_x), torch.from_numpy(train_y)
    epoch_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        order = torch.randperm(len(x_all))
        for batch, start in enumerate(range(0, len(order), args.batch_size), 1):
            index = order[start:start + args.batch_size]
            loss = loss_fn(model(x_all[index]), y_all[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
            progress.step(epoch, batch, loss.item(), len(index))
        epoch_loss = total / len(order)
    sys.stderr.write("\n")
    model.eval()
    metrics = validation_metrics(model, valid_x, valid_y)
    manifest = Manifest(
        name=args.name, sha256="", shape=shape, preprocessing=preprocessing,
        object_pixel_size=physics.OBJECT_PIXEL_SIZE, probe=dict(PROBE), photons=args.photons,
        training={"samples": args.samples, "epochs": args.epochs,
                  "batch_size": args.batch_size, "lr": args.lr, "optimiser": "Adam, one-cycle",
                  "loss": "L1 of amplitude and phase", "seed": args.seed,
                  "sample_seeds": list(TRAINING_SEEDS), "validation_seed": VALIDATION_SEED,
                  "final_loss": epoch_loss, "seconds": round(time.monotonic() - started, 1)},
        validation=metrics)
    return model, manifest


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch sizes its pool by the host's cores; a container may be allowed fewer
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, manifest = train(args)
    path = save_model(model, manifest, args.out_dir)
    metrics = manifest.validation
    print(f"validation: amplitude SSIM {metrics['amplitude_ssim']:.3f}, phase SSIM "
          f"{metrics['phase_ssim']:.3f}, amplitude MAE {metrics['amplitude_mae']:.4f}, "
          f"phase MAE {metrics['phase_mae']:.4f} rad")
    print(f"wrote {path} and its weights")
    return 0
