"""Bare-model speed: frames per second for each backend, precision and batch size.

Every case runs the same preprocessed simulated frames (a Fermat scan over the
sample of seed 0), one after the other in this process, after a warm-up. Prints
a table, the onnxruntime int8/fp32 speed ratio, how far int8 drifts from fp32
(mean abs difference, and SSIM of each against the ground truth), and draws the
table as a PNG where matplotlib imports. Cases that cannot run here (no GPU, no
tensorrt) are listed with the reason.

    python benchmarks/inference.py [--threads N] [--seconds 2] [--png inference.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ptychoedge.inference import onnx_export
from ptychoedge.inference.backends import SUPPORTED, BackendError, open_backend
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    ModelError,
    load_model,
)
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.sim import physics

try:
    from ptychoedge.inference.metrics import mean_ssim
except ImportError:
    mean_ssim = None

CASES = [(kind, precision) for kind, precisions in SUPPORTED.items() for precision in precisions]


def model_to_run(name: str, directory: Path) -> tuple[PtychoNN, Manifest, str]:
    try:
        model, manifest = load_model(name, directory)
        return model, manifest, f"{name} (width {manifest.shape.width})"
    except ModelError as error:
        shape = ModelShape()
        manifest = Manifest.for_instrument(
            "untrained", shape, Preprocessing(128, shape.input_size),
            physics.default_instrument())
        return PtychoNN(shape).eval(), manifest, (
            f"an untrained PtychoNN of the default shape (width {shape.width}): {error}")


def frames_per_second(backend, inputs: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        backend.infer(inputs)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or count < 3 * len(inputs):
        backend.infer(inputs)
        count += len(inputs)
    return count / (time.perf_counter() - started)


def scored_scan(manifest: Manifest, points: int) -> tuple[np.ndarray, np.ndarray]:
    simulator = physics.simulator_for(manifest.instrument, seed=0)
    frames, truth = simulator.frames(
        physics.fermat_spiral_positions(points, onnx_export.SCAN_STEP))
    return (manifest.preprocessing.canonical(manifest.instrument.window).frames(frames),
            manifest.preprocessing.targets(truth))


def accuracy(predicted: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """SSIM of amplitude and phase against the truth, or mean abs error without metrics.py."""
    if mean_ssim is not None:
        return (mean_ssim(predicted[:, 0], targets[:, 0], 1.0),
                mean_ssim(predicted[:, 1], targets[:, 1], 2 * np.pi))
    error = np.abs(predicted - targets).mean(axis=(0, 2, 3))
    return float(error[0]), float(error[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="intra-op threads per backend (default: every core; 0: runtime's)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="timed per case and batch, over all rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per batch; each case's best counts")
    parser.add_argument("--profile-batch", type=int, default=0,
                        help="also print onnxruntime's time per operator type, fp32 and "
                             "int8, at this batch (0: no)")
    parser.add_argument("--points", type=int, default=128, help="frames scored for accuracy")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="ONNX/engine cache (default: a fresh temporary one, so the "
                             "export time is measured)")
    parser.add_argument("--png", type=Path, default=Path("benchmark-logs/inference.png"))
    args = parser.parse_args()

    model, manifest, described = model_to_run(args.model, args.model_dir)
    inputs, targets = scored_scan(manifest, max(args.points, max(args.batches)))
    score = "SSIM" if mean_ssim is not None else "MAE (metrics.py missing)"
    print(f"model: {described}; input {manifest.shape.input_size}; threads {args.threads}; "
          f"{args.seconds:g} s per case and batch in {args.rounds} interleaved rounds; accuracy "
          f"as {score} on {len(inputs)} frames")
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="ptychoedge-bench-"))
    rates: dict[tuple[str, str], dict[int, float]] = {}
    quality: dict[tuple[str, str], tuple[float, float]] = {}
    outputs: dict[tuple[str, str], np.ndarray] = {}
    backends = {}
    for kind, precision in CASES:
        started = time.perf_counter()
        try:
            backend = open_backend(kind, precision, model, manifest, threads=args.threads,
                                   cache_dir=cache)
        except BackendError as error:
            print(f"  {kind} {precision}: skipped ({error})", flush=True)
            continue
        print(f"  {kind} {precision} on {backend.device}: opened in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        backends[kind, precision] = backend
        outputs[kind, precision] = np.concatenate(
            [backend.infer(inputs[i:i + 64]) for i in range(0, len(inputs), 64)])
        quality[kind, precision] = accuracy(outputs[kind, precision], targets)
        rates[kind, precision] = {}
    # Every case in turn, `rounds` times, keeping each case's best round: on a shared
    # machine another process's burst then slows one round of one case, not one case.
    for batch in args.batches:
        for _ in range(args.rounds):
            for case, backend in backends.items():
                rate = frames_per_second(backend, inputs[:batch], args.seconds / args.rounds)
                rates[case][batch] = max(rates[case].get(batch, 0.0), rate)
        print(f"  batch {batch:3d}: " + ", ".join(
            f"{kind} {precision} {by_batch[batch]:.1f}"
            for (kind, precision), by_batch in rates.items()) + " frames/s", flush=True)

    print(f"\n| backend | precision | {' | '.join(f'batch {b}' for b in args.batches)} "
          f"| {score} amplitude | {score} phase |")
    print("| --- | --- | " + " | ".join("---:" for _ in args.batches) + " | ---: | ---: |")
    for (kind, precision), by_batch in rates.items():
        amplitude, phase = quality[kind, precision]
        print(f"| {kind} | {precision} | "
              + " | ".join(f"{by_batch[b]:.0f}" for b in args.batches)
              + f" | {amplitude:.3f} | {phase:.3f} |")
    if ("onnxruntime", "int8") in rates:
        fp32, int8 = rates["onnxruntime", "fp32"], rates["onnxruntime", "int8"]
        ratios = ", ".join(f"batch {b} {int8[b] / fp32[b]:.2f}x" for b in args.batches)
        drift = np.abs(outputs["onnxruntime", "int8"] - outputs["onnxruntime", "fp32"])
        drift = drift.mean(axis=(0, 2, 3))
        lost = [quality["onnxruntime", "fp32"][i] - quality["onnxruntime", "int8"][i]
                for i in (0, 1)]
        print(f"\nonnxruntime int8 / fp32 speed: {ratios}")
        print(f"int8 vs fp32 mean abs difference: amplitude {drift[0]:.4f}, phase "
              f"{drift[1]:.4f} rad; {score} change from int8: amplitude {-lost[0]:+.4f}, "
              f"phase {-lost[1]:+.4f}")
    if args.profile_batch:
        for precision in ("fp32", "int8"):
            if ("onnxruntime", precision) in backends:
                profile(onnx_export.exported(model, manifest, precision, cache),
                        inputs[:args.profile_batch], args.threads, args.seconds, precision)
    draw(rates, args.batches, args.png, described)
    return 0


def profile(path: Path, batch: np.ndarray, threads: int, seconds: float, label: str) -> None:
    """onnxruntime's own profile of `path`: kernel time per operator type, per batch.

    The session is made as the backend makes it (same threads), plus profiling."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="ptychoedge-prof-")) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch}
    started, runs = time.perf_counter(), 0
    while time.perf_counter() - started < seconds or runs < 10:
        session.run(None, feed)
        runs += 1
    with open(session.end_profiling()) as handle:
        events = json.load(handle)
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e3 / runs
    total = sum(by_op.values())
    print(f"\nonnxruntime {label}, batch {len(batch)}: {total:.2f} ms of kernels per batch")
    for op, ms in sorted(by_op.items(), key=lambda item: -item[1]):
        if ms >= 0.005 * total:
            print(f"  {op:18s} {ms:7.3f} ms {100 * ms / total:5.1f}%")


def draw(rates: dict, batches: list[int], path: Path, described: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no PNG: matplotlib is not installed", file=sys.stderr)
        return
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
    axis.set_title(f"PtychoNN bare-model speed: {described.split(':')[0]}", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    print(f"picture: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
