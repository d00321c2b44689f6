"""Which PtychoNN size to ship: reconstruction quality against CPU speed, same training budget.

Each shape trains on the same simulated frames (seeds 101-104) for the same epochs.
Quality: mean SSIM of amplitude and phase on the validation sample (seed 201, the
model's whole output) and on a Fermat scan of the live simulator's sample (seed 0,
step 0.25 um, 1e6 photons), scored over the central 64x64 object pixels that every
shape covers (an input of 128 at binning 1 sees twice the field, most of it unlit).
Speed: bare torch CPU inference, frames/s at batch 1 and 16, all allowed cores.
The table goes into inference/MODELS.md.

    python benchmarks/model_size.py [--samples 6000 --epochs 4 --shapes 64x8 64x16 64x32 128x8]
    python benchmarks/model_size.py --speed-only    # speed alone, untrained weights
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

from ptychoedge.inference import training
from ptychoedge.inference.metrics import mean_ssim
from ptychoedge.inference.model import ModelShape, PtychoNN, count_parameters, flops_per_frame
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.sim import physics

COMMON_FIELD = 64  # object pixels every shape reconstructs


def frames_per_second(model: PtychoNN, batch: int, seconds: float) -> float:
    size = model.shape.input_size
    x = torch.rand(batch, 1, size, size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            model(x)
            count += batch
    return count / (time.perf_counter() - started)


def live_scan(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames and central truth (n, 2, 64, 64) of a scan of the live simulator's sample."""
    simulator = physics.PtychographySimulator(128, photons=1e6, seed=0,
                                              probe=physics.default_probe(128))
    frames, truth = simulator.frames(physics.fermat_spiral_positions(points, 0.25e-6),
                                     rng=np.random.default_rng(1))
    return frames, Preprocessing(128, COMMON_FIELD).targets(truth)


def live_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    """SSIM and Pearson correlation with the truth, of amplitude and of phase.

    A flat image already scores a high SSIM here (most 1.5-px windows of the truth
    are smooth), so the correlation is what tells the sizes apart.
    """
    scores = []
    for channel, data_range in ((0, 1.0), (1, 2 * np.pi)):
        got, want = predicted[:, channel], truth[:, channel]
        scores.append(mean_ssim(got, want, data_range))
        scores.append(float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
                      if np.ptp(got) > 0 else 0.0)
    return scores[0], scores[2], scores[1], scores[3]


def live_prediction(model: PtychoNN, frames: np.ndarray) -> np.ndarray:
    preprocessing = Preprocessing(128, model.shape.input_size)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(preprocessing.frames(frames))).numpy()
    top = (predicted.shape[-1] - COMMON_FIELD) // 2
    return predicted[..., top:top + COMMON_FIELD, top:top + COMMON_FIELD]


def shape_of(text: str) -> ModelShape:
    try:
        size, width = (int(part) for part in text.split("x"))
        return ModelShape(size, width)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: want INPUTxWIDTH, e.g. 64x16 "
                                         f"({error})") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6000, help="training frames per shape")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="small batches: the net leaves its flat-mean plateau by steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--points", type=int, default=200, help="live-sample scan points")
    parser.add_argument("--seconds", type=float, default=3.0, help="per speed measurement")
    parser.add_argument("--speed-only", action="store_true", help="skip training")
    parser.add_argument("--shapes", type=shape_of, nargs="+",
                        default=[shape_of(s) for s in ("64x8", "64x16", "64x32", "128x8")])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    header = ("| input | width | weights | GFLOP/frame | validation SSIM amplitude | validation "
              "SSIM phase | seed-0 SSIM amplitude | seed-0 SSIM phase | seed-0 correlation "
              "amplitude | seed-0 correlation phase | frames/s batch 1 | frames/s batch 16 | "
              "training (min) |")
    row_format = ("| {} | {} | {:,} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.2f} "
                  "| {:.2f} | {:.0f} | {:.0f} | {:.1f} |")
    frames, truth = live_scan(args.points)
    rows = []
    for shape in args.shapes:
        started = time.monotonic()
        quality = (float("nan"),) * 6
        if args.speed_only:
            model = PtychoNN(shape).eval()
        else:
            model, manifest = training.train(argparse.Namespace(
                name="study", input_size=shape.input_size, width=shape.width,
                samples=args.samples, validation=200, epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr, photons=1e6, seed=0))
            v = manifest.validation
            quality = (v["amplitude_ssim"], v["phase_ssim"],
                       *live_scores(live_prediction(model, frames), truth))
        minutes = (time.monotonic() - started) / 60
        rows.append((shape.input_size, shape.width, count_parameters(model),
                     flops_per_frame(shape) / 1e9, *quality,
                     frames_per_second(model, 1, args.seconds),
                     frames_per_second(model, 16, args.seconds), minutes))
        print(row_format.format(*rows[-1]), flush=True)
    flat = np.broadcast_to(truth.mean(axis=(0, 2, 3))[None, :, None, None], truth.shape)
    print(f"\nsame budget: {args.samples} frames x {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {args.lr}; "
          f"speed: torch {torch.__version__} CPU, {torch.get_num_threads()} threads; seed-0 "
          f"scan: {args.points} points")
    print(header)
    print("| --- " * 13 + "|")
    for row in rows:
        print(row_format.format(*row))
    a_ssim, p_ssim, a_corr, p_corr = live_scores(flat, truth)
    print(f"| flat image (the truth's mean) | | | | | | {a_ssim:.3f} | {p_ssim:.3f} | {a_corr:.2f} "
          f"| {p_corr:.2f} | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
