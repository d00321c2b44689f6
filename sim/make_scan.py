"""Simulate a ptychography scan of a chosen probe and sample and write it as CXI.

    python -m ptychoedge.sim.make_scan --probe zoneplate-defocus --sample labyrinth \\
        --points 300 --out scan.cxi

A Fermat spiral over the sample, Poisson-noisy frames, the instrument (10 keV, 75 um
pixels, the detector at the distance that makes the object pixel 10 nm) and the
true object, at the paths `sim/cxi_writer.py` lists. Replay it with
`ptychoedge sim --replay scan.cxi`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ptychoedge.sim import cxi_writer, physics, probes, samples

OVERLAP = 0.6  # linear overlap of neighbouring probes when no step is given
CHUNK = 32  # frames computed at a time


def probe_kind(text: str) -> str:
    if text in probes.PROBE_KINDS or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a probe kind ({', '.join(probes.PROBE_KINDS)}) nor a file")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ptychoedge.sim.make_scan",
                                description=__doc__.split("\n")[0])
    p.add_argument("--probe", type=probe_kind, default="default", metavar="KIND|FILE",
                   help=f"{', '.join(probes.PROBE_KINDS)}, or a .npy/.cxi probe sampled at "
                        "--pixel (default: default)")
    p.add_argument("--probe-modes", type=int, default=1, metavar="K",
                   help="incoherent probe modes of a preset (default 1)")
    p.add_argument("--sample", choices=list(samples.SAMPLE_KINDS), default="default")
    p.add_argument("--thickness", type=float, default=1.0,
                   help="sample thickness scale: phase and absorption (default 1)")
    p.add_argument("--points", type=int, default=300, help="scan points (default 300)")
    p.add_argument("--step", type=float, default=None, metavar="UM",
                   help="scan step in um (default: 60%% overlap of the probe's 90%% diameter)")
    p.add_argument("--photons", type=float, default=1e6,
                   help="photons per frame with no sample (default 1e6)")
    p.add_argument("--size", type=int, default=128, help="frame size in pixels (default 128)")
    p.add_argument("--pixel", type=float, default=physics.OBJECT_PIXEL_SIZE * 1e9,
                   metavar="NM", help="object pixel size in nm (default 10)")
    p.add_argument("--seed", type=int, default=0, help="sample and noise seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="the .cxi file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dx = args.pixel * 1e-9
    n = args.size
    if args.points < 1 or not args.photons > 0:
        raise SystemExit("make_scan: error: --points and --photons must be positive")
    try:
        probe = probes.named_probe(args.probe, n, dx, args.probe_modes)
    except ValueError as error:
        raise SystemExit(f"make_scan: error: {error}") from None
    diameter = probes.encircled_diameter(probe, dx)
    step = args.step * 1e-6 if args.step else physics.step_for_overlap(diameter, OVERLAP)
    positions = physics.fermat_spiral_positions(args.points, step)
    # The sample covers the scan and a window beyond it, at least 256 pixels.
    reach = np.abs(positions).max() / dx
    side = max(256, int(np.ceil(2 * reach)) + n + 64)
    sample = samples.named_sample(args.sample, (side, side), args.seed, args.thickness)
    simulator = physics.PtychographySimulator(n, photons=args.photons, dtype=np.uint32,
                                              seed=args.seed, sample=sample, probe=probe,
                                              pixel_size=dx)
    distance = probes.distance_for_pixel_size(dx, probes.NANOPROBE_ENERGY_EV,
                                              probes.NANOPROBE_DETECTOR_PIXEL, n)
    print(f"probe {probes.describe(args.probe)}; {len(probe)} mode(s), 90% of it within "
          f"{diameter * 1e6:.2f} um", flush=True)
    print(f"sample {samples.describe(args.sample, args.thickness)}; {side} x {side} pixels",
          flush=True)
    print(f"{args.points} points, step {step * 1e6:.3f} um; {n} x {n} frames at "
          f"{probes.NANOPROBE_ENERGY_EV / 1e3:g} keV, {distance:.3f} m, object pixel "
          f"{dx * 1e9:g} nm", flush=True)
    frames = np.empty((args.points, n, n), np.uint32)
    started = time.monotonic()
    tty = sys.stdout.isatty()
    for start in range(0, args.points, CHUNK):
        stop = min(start + CHUNK, args.points)
        frames[start:stop] = simulator.frames(positions[start:stop])[0]
        line = f"frames {stop}/{args.points}  {time.monotonic() - started:.1f} s"
        print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print()
    cxi_writer.write_scan(args.out, frames, positions, probe=simulator.probe,
                          photons=args.photons, energy_ev=probes.NANOPROBE_ENERGY_EV,
                          distance=distance, detector_pixel=probes.NANOPROBE_DETECTOR_PIXEL,
                          sample=sample, sample_pixel_size=dx)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
