"""Bare-model speed: frames per second for each backend, precision and batch size.

Every case runs the same preprocessed simulated frames, one after the other in
this process, after a warm-up. Also prints how far int8 drifts from fp32
(SSIM of the outputs against ground truth for both) and the int8/fp32 speed
ratio, and draws the table as a PNG.

    python benchmarks/inference.py [--threads 2] [--seconds 3] [--png inference.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ptychoedge.inference.backends import BackendError, open_backend
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, load_model
from ptychoedge.inference.metrics import ssim
from ptychoedge.sim import physics

CASES = [("torch", "fp32"), ("torch", "fp16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
         ("tensorrt", "fp16"), ("tensorrt", "int8")]


def frames_per_second(backend, inputs: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        backend.infer(inputs)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        backend.infer(inputs)
        count += len(inputs)
    return count / (time.perf_counter() - started)


def test_scan(manifest, points: int = 128):
    simulator = physics.PtychographySimulator(manifest.preprocessing.crop_size,
                                              photons=manifest.photons, seed=0,
                                              probe=physics.make_probe(**manifest.probe))
    frames, truth = simulator.frames(physics.fermat_spiral_positions(points, 0.25e-6))
    return manifest.preprocessing.frames(frames), manifest.preprocessing.targets(truth)


def mean_ssim(predicted: np.ndarray, targets: np.ndarray, channel: int, span: float) -> float:
    return float(np.mean([ssim(p[channel], t[channel], span)
                          for p, t in zip(predicted, targets, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case")
    parser.add_argument("--png", type=Path, default=Path("benchmark-logs/inference.png"))
    args = parser.parse_args()

    model, manifest = load_model(args.model, args.model_dir)
    inputs, targets = test_scan(manifest)
    print(f"{args.model}: input {manifest.shape.input_size}, width {manifest.shape.width}; "
          f"threads {args.threads or 'all'}")
    rates: dict[tuple[str, str], dict[int, float]] = {}
    quality: dict[tuple[str, str], tuple[float, float]] = {}
    for kind, precision in CASES:
        try:
            backend = open_backend(kind, precision, model, manifest, threads=args.threads)
        except BackendError as error:
            print(f"{kind:>12} {precision}: skipped ({error})")
            continue
        predicted = backend.infer(inputs)
        quality[kind, precision] = (mean_ssim(predicted, targets, 0, 1.0),
                                    mean_ssim(predicted, targets, 1, 2 * np.pi))
        rates[kind, precision] = {}
        for batch in args.batches:
            batch_inputs = np.resize(inputs, (batch, *inputs.shape[1:]))
            rates[kind, precision][batch] = frames_per_second(backend, batch_inputs,
                                                               args.seconds)
            print(f"{kind:>12} {precision} batch {batch:3d}: "
                  f"{rates[kind, precision][batch]:8.1f} frames/s", flush=True)

    print("\n| backend | precision | " + " | ".join(f"batch {b}" for b in args.batches)
          + " | SSIM amplitude | SSIM phase |")
    print("| --- | --- | " + " | ".join("---" for _ in args.batches) + " | --- | --- |")
    for (kind, precision), by_batch in rates.items():
        amplitude, phase = quality[kind, precision]
        print(f"| {kind} | {precision} | " + " | ".join(f"{by_batch[b]:.0f}" for b in args.batches)
              + f" | {amplitude:.3f} | {phase:.3f} |")
    if ("onnxruntime", "int8") in rates:
        fp32, int8 = rates["onnxruntime", "fp32"], rates["onnxruntime", "int8"]
        best = max(args.batches, key=lambda b: int8[b])
        drop = [quality["onnxruntime", "fp32"][i] - quality["onnxruntime", "int8"][i]
                for i in (0, 1)]
        print(f"\nonnxruntime int8 / fp32 speed at batch {best}: {int8[best] / fp32[best]:.2f}x "
              f"(goal >= 1.8); SSIM lost to int8: amplitude {drop[0]:.3f}, phase {drop[1]:.3f} "
              "(goal <= 0.02)")
    draw(rates, args.batches, args.png)
    return 0


def draw(rates: dict, batches: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(rates), 1)
    for i, ((kind, precision), by_batch) in enumerate(rates.items()):
        axis.bar(np.arange(len(batches)) + i * width, [by_batch[b] for b in batches], width,
                 label=f"{kind} {precision}")
    axis.set_xticks(np.arange(len(batches)) + width * (len(rates) - 1) / 2,
                    [f"batch {b}" for b in batches])
    axis.set_ylabel("frames / s")
    axis.set_title("PtychoNN bare-model speed")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    print(f"picture: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
