"""Simulate a ptychography scan of a chosen probe and sample and write it as CXI.

    ptychoedge make-scan --probe zoneplate-defocus --sample labyrinth --points 300 \\
        --out scan.cxi

A Fermat spiral over the sample, Poisson-noisy frames, the simulated instrument
(sim/physics.py: 10 keV, 75 um pixels, the detector where the object pixel is
--pixel) and the true object, written by inference/instrument.py's `write_cxi` (its
docstring lists the paths and units). Replay it with `ptychoedge sim --replay
scan.cxi`; `read_cxi` reads its instrument back. With `--mask M.npy` the detector has
gaps: their pixels read the pixel type's maximum and the file holds the mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ptychoedge.inference.instrument import (
    Instrument,
    InstrumentError,
    checked_mask,
    read_mask,
    write_cxi,
)
from ptychoedge.sim import physics, probes, samples, scene

PROGRAM = "ptychoedge make-scan"
OVERLAP = 0.6  # linear overlap of neighbouring probes when no step is given
CHUNK = 32  # frames computed at a time


def probe_kind(text: str) -> str:
    if text in probes.PROBE_KINDS or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a probe kind ({', '.join(probes.PROBE_KINDS)}) nor a file")


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--mask", type=Path, default=None, metavar="FILE",
                   help="a detector mask (.npy, CXI or NeXus NXmx; --size square, nonzero: "
                        "a pixel that measures "
                        "nothing), written to the file; those pixels read the maximum")
    p.add_argument("--out", type=Path, required=True, help="the .cxi file to write")


def instrument_for(probe: np.ndarray, photons: float, dx: float) -> Instrument:
    """The simulated instrument (physics.geometry) with `probe`, its detector moved so that
    the probe's window samples the object at `dx` (m): the object pixel goes as the
    distance."""
    n = probe.shape[-1]
    geometry = physics.geometry(n)
    geometry = dataclasses.replace(
        geometry, distance_m=geometry.distance_m * dx / geometry.object_pixel_size(n))
    return Instrument(geometry, probe, photons)


def run(args: argparse.Namespace) -> int:
    dx = args.pixel * 1e-9
    n = args.size
    try:
        if args.points < 1 or not args.photons > 0:
            raise ValueError("--points and --photons must be positive")
        probe = probes.named_probe(args.probe, n, dx, args.probe_modes)
        instrument = instrument_for(probe, args.photons, dx)
        if args.mask:
            instrument.mask = checked_mask(read_mask(args.mask), (n, n), str(args.mask))
    except ValueError as error:  # ProbeError, InstrumentError
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    diameter = probes.encircled_diameter(probe, dx)
    step = args.step * 1e-6 if args.step else physics.step_for_overlap(diameter, OVERLAP)
    positions = physics.fermat_spiral_positions(args.points, step)
    # The sample covers the scan and a window beyond it, at least 256 pixels.
    reach = np.abs(positions).max() / dx
    side = max(256, int(np.ceil(2 * reach)) + n + 64)
    sample = samples.named_sample(args.sample, (side, side), args.seed, args.thickness)
    simulator = physics.simulator_for(instrument, dtype=np.uint32, seed=args.seed,
                                      sample=sample)
    geometry = instrument.geometry
    print(f"probe {probes.describe(args.probe)}; {instrument.modes} mode(s), 90% of it "
          f"within {diameter * 1e6:.2f} um", flush=True)
    print(f"sample {samples.describe(args.sample, args.thickness)}; {side} x {side} pixels",
          flush=True)
    print(f"{args.points} points, step {step * 1e6:.3f} um; {n} x {n} frames at "
          f"{geometry.energy_ev / 1e3:g} keV, {geometry.distance_m:.3f} m, object pixel "
          f"{dx * 1e9:g} nm", flush=True)
    frames = np.empty((args.points, n, n), np.uint32)
    started = time.monotonic()
    tty = sys.stdout.isatty()
    for start in range(0, args.points, CHUNK):
        stop = min(start + CHUNK, args.points)
        frames[start:stop] = scene.marked(simulator.frames(positions[start:stop])[0],
                                          instrument.mask)
        line = f"frames {stop}/{args.points}  {time.monotonic() - started:.1f} s"
        print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print()
    try:
        write_cxi(args.out, instrument, frames, positions, sample=sample,
                  sample_pixel_size=dx)
    except (OSError, InstrumentError) as error:
        print(f"{PROGRAM}: error: {args.out}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":  # python -m ptychoedge.sim.make_scan, as before
    parser = argparse.ArgumentParser(prog=PROGRAM)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
