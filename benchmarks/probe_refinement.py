"""Probe refinement: a scan refined with a probe known a little off, the object alone
against the probe refined with it (inference/refine.py).

A beamline's probe drifts, and a probe measured on another day, or computed from the
optics, is off. The scan here is the zone plate 0.15 mm out of focus over a Siemens star
(300 points, as benchmarks/fidelity.py case (ii)); the refinement is given the same zone
plate at another defocus, and runs from a flat object for --seconds, once with that probe
fixed and once refining it from sweep PROBE_FROM. Scored against the truth (aligned, phase
offset removed): Pearson correlation and SSIM (a flat image's beside it in report.json),
amplitude and phase, and the overlap of the probe's strongest mode with the true one (1:
the same probe).

Prints a table and writes benchmark-logs/probe-refinement/{report.json,probe_refinement.png}.

    python benchmarks/probe_refinement.py [--seconds 30] [--errors-um 0 15 30 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ptychoedge.inference.comparison import compare_images
from ptychoedge.inference.instrument import Instrument, Orientation
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
from ptychoedge.inference.reconstruct import save_pictures
from ptychoedge.inference.refine import PROBE_FROM, probe_overlap, refine
from ptychoedge.sim.probes import ZONE_PLATE, ZONE_PLATE_DEFOCUS, zone_plate_probe

sys.path.insert(0, str(Path(__file__).parent))
from fidelity import scan_of  # noqa: E402 - the same simulated scans as the fidelity table

OUT = Path("benchmark-logs/probe-refinement")
KIND, SEED = "siemens-star", 401


def zone_plate(known: Instrument, defocus: float) -> Instrument:
    probe = zone_plate_probe(known.window, known.object_pixel_size, **ZONE_PLATE,
                             defocus=defocus)
    return Instrument(known.geometry, probe, known.photons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="seconds of each refinement (default %(default)s)")
    parser.add_argument("--errors-um", type=float, nargs="+", default=[0.0, 15.0, 30.0, 50.0],
                        help="how far nearer the focus the given probe is, um")
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    known = load_manifest(DEFAULT_MODEL).instrument
    truth = zone_plate(known, ZONE_PLATE_DEFOCUS)
    with tempfile.TemporaryDirectory() as work:
        frames, positions, sample, pixel = scan_of(truth, KIND, SEED, args.points,
                                                   Path(work) / "scan.cxi")
    print(f"{args.points} frames of a zone plate {ZONE_PLATE_DEFOCUS * 1e6:.0f} um out of "
          f"focus over a {KIND}; {args.seconds:.0f} s from a flat object each; correlation "
          f"amplitude / phase, probe overlap with the true one", flush=True)
    print(f"{'given probe':<30} {'object alone':<38} {'probe refined too':<38}", flush=True)
    report, pictures = [], {}
    for error in args.errors_um:
        given = zone_plate(known, ZONE_PLATE_DEFOCUS - error * 1e-6)
        row = {"defocus_error_um": error,
               "given_overlap": probe_overlap(given.probe, truth.probe)}
        for name, probe_from in (("fixed", None), ("refined", PROBE_FROM)):
            refinement = refine(frames, positions, given, Orientation(), args.seconds,
                                probe_from=probe_from)
            images = refinement.images()
            scores, _ = compare_images(*images, refinement.lit, refinement.pixel_size,
                                       refinement.origin, sample, pixel)
            row[name] = {**{f"{kind}{part}_{measure}": scores[f"{kind}{part}_{measure}"]
                            for kind in ("", "flat_") for part in ("amplitude", "phase")
                            for measure in ("correlation", "ssim")},
                         "probe_overlap": probe_overlap(refinement.probe, truth.probe),
                         "sweeps": refinement.sweeps,
                         "fourier_error": refinement.errors[-1]}
            pictures[f"{error:g} um off, probe {name}"] = images
        report.append(row)
        given_cell = f"{error:g} um off (overlap {row['given_overlap']:.3f})"
        cells = [f"{row[n]['amplitude_correlation']:+.2f} / {row[n]['phase_correlation']:+.2f}"
                 f" (SSIM {row[n]['amplitude_ssim']:.2f} / {row[n]['phase_ssim']:.2f}),"
                 f" {row[n]['probe_overlap']:.3f}" for n in ("fixed", "refined")]
        print(f"{given_cell:<30} {cells[0]:<38} {cells[1]:<38}", flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_pictures(args.out / "probe_refinement.png",
                  f"{KIND} through a zone plate, refined with a probe known off", pictures)
    print(f"wrote {args.out}/report.json and probe_refinement.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
