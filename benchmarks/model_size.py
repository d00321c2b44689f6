"""Which PtychoNN size to ship: validation quality against CPU speed, same training budget.

Each shape trains on the same simulated frames for the same epochs, then its
validation SSIM and its bare torch speed (batch 1 and 16, all cores) are
measured. The table goes into inference/MODELS.md.

    python benchmarks/model_size.py [--samples 3000 --epochs 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ptychoedge.inference import training
from ptychoedge.inference.model import ModelShape, PtychoNN, count_parameters, flops_per_frame

SHAPES = [(64, 8), (64, 16), (64, 32)]


def speed(shape: ModelShape, batch: int, seconds: float = 2.0) -> float:
    model = PtychoNN(shape).eval()
    x = torch.zeros(batch, 1, shape.input_size, shape.input_size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            model(x)
            count += batch
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for input_size, width in SHAPES:
        shape = ModelShape(input_size, width)
        print(f"input {input_size}, width {width}: training", flush=True)
        started = time.monotonic()
        _, manifest = training.train(argparse.Namespace(
            name="study", out_dir=None, input_size=input_size, width=width,
            samples=args.samples, validation=200, epochs=args.epochs, batch_size=32, lr=2e-3,
            photons=1e6, seed=0))
        minutes = (time.monotonic() - started) / 60
        v = manifest.validation
        rows.append((input_size, width, count_parameters(PtychoNN(shape)),
                     flops_per_frame(shape) / 1e9, v["amplitude_ssim"], v["phase_ssim"],
                     speed(shape, 1), speed(shape, 16), minutes))
    print(f"\nsame budget: {args.samples} frames x {args.epochs} epochs; speed: torch CPU, "
          f"{torch.get_num_threads()} threads")
    print("| input | width | weights | GFLOP/frame | SSIM amplitude | SSIM phase | "
          "frames/s batch 1 | frames/s batch 16 | training (min) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| {} | {} | {:,} | {:.3f} | {:.3f} | {:.3f} | {:.0f} | {:.0f} | {:.1f} |"
              .format(*row))
    best = max(rows, key=lambda r: r[4] + r[5] + 0.1 * np.log2(r[7]))
    print(f"\nbest quality for speed (sum of SSIMs + 0.1 log2 speed): input {best[0]}, "
          f"width {best[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
