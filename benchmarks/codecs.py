"""Compressed frames: decode cost, compression ratio, and the pipeline's loss-free rate.

1. Decode cost per frame (inference/frames.py, what the processor runs for each
   frame) for every codec NDPluginCodec offers, at 128x128 and 512x512 uint16,
   against the bare model's inference per frame (same backend, batch, threads).
2. Compression ratio on simulated diffraction frames at 1e4, 1e6 and 1e8 photons
   per frame, and the frames per second that fit in 1 Gb/s.
3. The pipeline's highest loss-free rate (simulated detector -> one instance ->
   collector, benchmarks/pipeline.py) with `cam1:Codec` None, lz4, blosc and bslz4,
   side by side in one run; short trials (--seconds), so read it as a comparison.

    python benchmarks/codecs.py [--no-pipeline] [--seconds 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ptychoedge.inference import frames
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR
from ptychoedge.sim import physics

USHORT = 6  # pvAccess ScalarType of uint16
VARIANTS = [
    ("lz4", {}),
    ("blosc", {}),  # NDPluginCodec's defaults: blosclz, level 5, byte shuffle
    ("blosc", {"blosc_compressor": "lz4", "blosc_shuffle": "Bit"}),
    ("blosc", {"blosc_compressor": "zstd", "blosc_shuffle": "Bit"}),
    ("bslz4", {}),
]
LINK = 1e9 / 8  # bytes/s: 1 Gb/s per edge node


def label(codec: str, settings: dict) -> str:
    if codec != "blosc":
        return codec
    return (f"blosc/{settings.get('blosc_compressor', 'blosclz')}"
            f"/{settings.get('blosc_shuffle', 'Byte').lower()}-shuffle")


def diffraction(size: int, photons: float, count: int) -> np.ndarray:
    simulator = physics.PtychographySimulator(size, photons=photons, seed=1)
    return simulator.frames(physics.fermat_spiral_positions(count, 0.25e-6))[0]


def per_frame(function, payloads, repeat: float = 0.3) -> float:
    """Seconds per call, over at least `repeat` s."""
    calls, started = 0, time.perf_counter()
    while True:
        for payload in payloads:
            function(payload)
        calls += len(payloads)
        elapsed = time.perf_counter() - started
        if elapsed >= repeat:
            return elapsed / calls


def decode_costs(inference_s: float) -> None:
    print("\n### Decode cost per frame (uint16, 1e6 photons)\n")
    print("| codec | 128x128 (us) | 512x512 (us) | 128x128 vs inference |")
    print("| --- | --- | --- | --- |")
    images = {n: diffraction(n, 1e6, 8) for n in (128, 512)}
    for codec, settings in [("raw", {}), *VARIANTS]:
        costs = []
        for images_n in images.values():
            if codec == "raw":  # what an uncompressed frame costs: the reshape and copy
                payloads = list(images_n)
                costs.append(per_frame(lambda image: np.array(image), payloads))
                continue
            payloads = [frames.compress(image, codec, **settings) for image in images_n]
            nbytes = images_n[0].nbytes
            costs.append(per_frame(
                lambda p, c=codec, n=nbytes: frames.decompress(p, c, USHORT, n), payloads))
        print(f"| {label(codec, settings)} | {costs[0] * 1e6:.0f} | {costs[1] * 1e6:.0f} | "
              f"{costs[0] / inference_s:.1%} |", flush=True)


def ratios() -> None:
    print("\n### Compression ratio on simulated diffraction frames (128x128 uint16)\n")
    photon_counts = (1e4, 1e6, 1e8)
    header = " | ".join(f"{p:.0e} photons" for p in photon_counts)
    print(f"| codec | {header} | frames/s in 1 Gb/s at 1e6 |")
    print("| --- | --- | --- | --- | --- |")
    images = {p: diffraction(128, p, 16) for p in photon_counts}
    raw_rate = LINK / images[1e6][0].nbytes
    print(f"| raw | 1.0 | 1.0 | 1.0 | {raw_rate:.0f} |")
    for codec, settings in VARIANTS:
        row, rate = [], 0.0
        for photons, stack in images.items():
            sizes = [frames.compress(image, codec, **settings).nbytes for image in stack]
            row.append(stack[0].nbytes / np.mean(sizes))
            if photons == 1e6:
                rate = LINK / np.mean(sizes)
        print(f"| {label(codec, settings)} | " + " | ".join(f"{r:.1f}" for r in row)
              + f" | {rate:.0f} |", flush=True)


def pipeline_rates(args, bare: float) -> None:
    from pipeline import Pipeline, highest_rate  # the pipeline benchmark, beside this file

    print(f"\n### Loss-free rate, one instance ({args.backend} batch {args.batch}; "
          f"{args.seconds:.0f} s trials)\n", flush=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(args, 1, args.logs)
    results = []
    try:
        for codec in ("None", "lz4", "blosc", "bslz4"):
            pipeline.ctx.put(pipeline.prefix + "cam1:Codec", codec, timeout=5)
            print(f"  {codec}:", flush=True)
            rate, _ = highest_rate(pipeline, 0.6 * bare, args.seconds)
            results.append((codec, rate))
    finally:
        pipeline.stop()
    print("\n| codec | highest loss-free rate (Hz) | vs raw |")
    print("| --- | --- | --- |")
    for codec, rate in results:
        print(f"| {codec} | {rate:.0f} | {rate / max(results[0][1], 1e-9):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per pipeline trial")
    parser.add_argument("--server-queue", type=int, default=100)
    parser.add_argument("--no-pipeline", action="store_true", help="decode and ratios only")
    parser.add_argument("--logs", type=Path, default=Path("benchmark-logs/codecs"))
    args = parser.parse_args()
    from pipeline import bare_rate

    bare = bare_rate(args)
    print(f"bare model: {args.model} {args.backend} {args.precision} batch {args.batch}, "
          f"{args.threads} thread(s): {bare:.1f} frames/s = {1e6 / bare:.0f} us per frame",
          flush=True)
    decode_costs(1 / bare)
    ratios()
    if not args.no_pipeline:
        pipeline_rates(args, bare)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
