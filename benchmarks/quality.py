"""The quality signals: does the residual tell known frames from unknown ones, do the
images tell the frames apart (the share of their variation explained), do neighbouring
images agree where they overlap (the fit guard reads all three), and what do they cost
next to inference?

Known: the probe and kind of sample the model was trained on (an unseen sample,
seed 0). Unknown: another probe; samples of other kinds (sharp binary blocks; the
simulator's labyrinth and Siemens star, which the shipped network never saw); and the
known frames placed at the next frame's position (a stage read one frame late).

    python benchmarks/quality.py [--frames 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ptychoedge.inference.backends import open_backend
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_model
from ptychoedge.inference.mosaic import Mosaic, agreement
from ptychoedge.sim import physics
from ptychoedge.sim.samples import named_sample


def blocks_sample(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 2, size=(shape[0] // 16 + 1, shape[1] // 16 + 1))
    binary = np.kron(coarse, np.ones((16, 16)))[: shape[0], : shape[1]]
    return (np.where(binary, 0.4, 1.0) * np.exp(1j * np.where(binary, 1.2, -0.3))).astype(
        np.complex64)




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, manifest = load_model(args.model)
    backend = open_backend("torch", "fp32", model, manifest, threads=1)
    reconstructor = Reconstructor(backend, manifest)
    positions = physics.fermat_spiral_positions(args.frames, 0.25e-6)
    size = manifest.preprocessing.crop_size
    known_probe = manifest.instrument.probe
    cases = {
        "known (trained probe, unseen sample)":
            physics.PtychographySimulator(size, seed=0, probe=known_probe),
        "unknown probe (diameter 40, in focus)":
            physics.PtychographySimulator(size, seed=0, probe=physics.make_probe(size, 40, 0.5)),
        "unknown sample (binary blocks)":
            physics.PtychographySimulator(size, seed=0, probe=known_probe,
                                          sample=blocks_sample((1024, 1024), 5)),
        **{f"unknown sample ({kind})": physics.PtychographySimulator(
            size, seed=0, probe=known_probe, sample=named_sample(kind, (1024, 1024), 301))
           for kind in ("labyrinth", "siemens-star")},
    }
    placed = {name: positions for name in cases}
    cases["known, at the next frame's position"] = cases["known (trained probe, unseen sample)"]
    placed["known, at the next frame's position"] = np.roll(positions, -1, axis=0)
    known = None
    print(f"{'case':<40} {'residual median':>16} {'p10':>8} {'p90':>8} {'> known p90':>12} "
          f"{'vary/noise':>11} {'explained':>10} {'agreement':>10}")
    for name, simulator in cases.items():
        result = reconstructor([frame for frame in simulator.frames(positions)[0]])
        values = result.residuals
        if known is None:
            known = values
        above = float(np.mean(values > np.percentile(known, 90)))
        over_noise, explained = result.spread.figures()
        mosaic = Mosaic.for_model(manifest)
        agreed = agreement(overlap for overlap in (
            mosaic.add(patch[0], patch[1], x, y)
            for patch, (x, y) in zip(result.patches, placed[name], strict=True)) if overlap)
        print(f"{name:<40} {np.median(values):16.4f} {np.percentile(values, 10):8.4f} "
              f"{np.percentile(values, 90):8.4f} {above:12.0%} {over_noise:11.1f} "
              f"{explained:10.1%} {agreed:10.0%}")

    frames = cases["known (trained probe, unseen sample)"].frames(positions[: args.batch])[0]
    binned = np.concatenate([manifest.preprocessing.binned(f) for f in frames])
    inputs = manifest.preprocessing.normalise(binned)
    output = backend.infer(inputs)

    def seconds(action, repeats: int = 20) -> float:
        action()
        started = time.perf_counter()
        for _ in range(repeats):
            action()
        return (time.perf_counter() - started) / repeats / args.batch

    inference = seconds(lambda: backend.infer(inputs))
    fit = seconds(lambda: reconstructor.fit(binned, output[:, 0], output[:, 1]))
    print(f"\nper frame, batch {args.batch}, 1 thread: inference {1e3 * inference:.3f} ms, "
          f"residual and spread {1e3 * fit:.3f} ms = {fit / inference:.1%} of inference "
          "(goal < 10%)")
    # the collector stitches every instance's patches, and compares each with the mosaic
    # before it (the agreement), in one process
    mosaic = Mosaic.for_model(manifest)
    spots = positions[: args.batch]
    stitch = seconds(lambda: [mosaic.add(output[i, 0], output[i, 1], x, y)
                              for i, (x, y) in enumerate(spots)])
    print(f"collector per patch (stitched and compared), 1 thread: {1e3 * stitch:.3f} ms = "
          f"{stitch / inference:.1%} of an instance's inference per frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
