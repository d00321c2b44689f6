"""Fidelity: is the stitched image true, for the model's instrument and for one it never saw?

Held-out simulated scans are reconstructed and stitched as the pipeline does, then
scored against the ground truth (aligned, phase offset removed), amplitude and phase
apart: SSIM, Pearson correlation and PSNR, each beside a flat image's (a constant at
the truth's mean). The cases:

  (i)   the model's own instrument and sample families, on samples it never saw; the
        network's image refined through the physics for --refine-seconds (refine.py:
        ePIE with the known probe on every detector pixel, the exact forward model, its
        first steps relaxed) and beside it the same refinement from a flat object for as
        long, and with ePIE's step throughout; and the refinement from a flat object for
        --epie-seconds: what the frames themselves allow;
  (ii)  a probe and a sample family it never saw: the model as shipped, then a model
        trained self-supervised on that scan's own frames (no labels: `ptychoedge train
        --scan SCAN`, from scratch, or from the model with --from-model), and that
        model's image refined for --refine-seconds;
  (iii) the refinement from a flat object (on every detector pixel) on the same
        scan, given the time of the fine-tune, the network and the refinement together.

Each refinement of a network's image is followed by a row of the same with its amplitude
filtered to what two half-scans (the even and the odd frames refined apart, a third of its
time each) resolve (resolution.py), with the half-periods they resolve (the object's, the
amplitude's); and (iii) by the same, its refinement and half-scans given the time of the
fine-tune, the network, the refinement and its half-scans together.

Prints a table and writes benchmark-logs/fidelity/{report.json,fidelity.png}.

    python benchmarks/fidelity.py [--points 300] [--finetune-epochs 30] [--model NAME]
        [--from-model] [--refine-seconds 8] [--epie-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ptychoedge.inference import training
from ptychoedge.inference.backends import open_backend
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.comparison import compare_images
from ptychoedge.inference.instrument import Instrument, Orientation, write_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, Manifest, load_model
from ptychoedge.inference.mosaic import agreement
from ptychoedge.inference.reconstruct import reconstruct, save_pictures
from ptychoedge.inference.refine import RELAXED, refine
from ptychoedge.inference.resolution import HALVES_SHARE, half_scans, with_half_scans
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe
from ptychoedge.sim.samples import named_sample

OUT = Path("benchmark-logs/fidelity")
STEP = 0.25e-6  # m: about 60% overlap for the probes used here
SAMPLE_SIDE = 1024
KNOWN_CASES = (("default", 0), ("labyrinth", 301), ("particles", 301))  # kind, unseen seed
UNSEEN_PROBE, UNSEEN_KINDS = "zoneplate-defocus", ("siemens-star", "strong-phase")


def scan_of(instrument: Instrument, kind: str, seed: int, points: int, path: Path):
    """Simulate and write a scan; its frames, positions and the true object."""
    simulator = physics.simulator_for(instrument, seed=seed,
                                      sample=named_sample(kind, (SAMPLE_SIDE, SAMPLE_SIDE), seed))
    positions = physics.fermat_spiral_positions(points, STEP)
    frames, _ = simulator.frames(positions)
    write_cxi(path, instrument, frames, positions, sample=simulator.sample,
              sample_pixel_size=simulator.pixel_size)
    return frames, positions, simulator.sample, simulator.pixel_size


def network(model, manifest: Manifest, frames, positions, truth, truth_pixel):
    backend = open_backend("onnxruntime", "fp32", model, manifest, threads=1)
    result = reconstruct(frames, positions, Reconstructor(backend, manifest))
    mosaic = result.mosaic
    amplitude, phase = mosaic.images()
    scores, aligned = compare_images(amplitude, phase, mosaic.coverage(), mosaic.pixel_size,
                                     mosaic.position_to_pixel(0.0, 0.0), truth, truth_pixel)
    scores |= {"seconds": result.seconds, "ms_per_frame": 1e3 * result.seconds / len(frames),
               "residual_median": float(np.nanmedian(result.residuals)),
               "agreement": agreement(result.overlaps)}
    return scores, (amplitude, phase), aligned, mosaic


def refined(instrument: Instrument, frames, positions, truth, truth_pixel, seconds: float,
            mosaic=None, relaxed: float = RELAXED):
    """Whole-detector ePIE (simulated frames: oriented, beam centred) for `seconds`, from
    `mosaic` or from a flat object, its first steps relaxed from `relaxed` (1: ePIE's step
    throughout); its scores, images and sweeps, and the refinement."""
    refinement = refine(frames, positions, instrument, Orientation(), seconds, mosaic,
                        relaxed=relaxed)
    images = refinement.images()
    scores, _ = compare_images(*images, refinement.lit, refinement.pixel_size,
                               refinement.origin, truth, truth_pixel)
    return scores | {"seconds": refinement.seconds}, images, refinement.sweeps, refinement


def filtered(refinement, frames, positions, instrument: Instrument, truth, truth_pixel):
    """The refinement's amplitude filtered to what two half-scans, refined apart for a
    third of its time each, resolve (resolution.py); its scores and images."""
    resolution = half_scans(frames, positions, instrument, Orientation(), refinement,
                            refinement.seconds * HALVES_SHARE)
    images = (resolution.filtered_amplitude(np.abs(refinement.obj), refinement.lit),
              refinement.images()[1])
    scores, _ = compare_images(*images, refinement.lit, refinement.pixel_size,
                               refinement.origin, truth, truth_pixel)
    return scores | resolution.figures(), images


def filtered_row(name: str, scores: dict) -> str:
    return (row(f"{name}, amplitude filtered", scores)
            + f"  halves {scores['halves_seconds']:.0f} s, resolved "
            f"{scores['object_half_period'] * 1e9:.0f}/{scores['amplitude_half_period'] * 1e9:.0f}"
            " nm")


def fine_tune(scan: Path, parent: str | None, model_dir: Path, epochs: int, out_dir: Path):
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    start = ["--from", parent, "--model-dir", str(model_dir)] if parent else []
    options = parser.parse_args(["--scan", str(scan), *start, "--name", "finetuned",
                                 "--out-dir", str(out_dir), "--epochs", str(epochs),
                                 "--batch-size", "16", "--lr", "2e-3"])
    started = time.perf_counter()
    model, manifest = training.train(options)
    return model.eval(), manifest, time.perf_counter() - started


def row(name: str, scores: dict) -> str:
    """The scores on one line; a network's with its images' agreement where they overlap."""
    agreed = f"  agreement {scores['agreement']:+.2f}" if "agreement" in scores else ""
    return (f"{name:<46} " + "  ".join(
        f"{scores[f'{c}_ssim']:.3f}/{scores[f'flat_{c}_ssim']:.3f} "
        f"{scores[f'{c}_correlation']:+.2f} {scores[f'{c}_psnr']:5.1f}/"
        f"{scores[f'flat_{c}_psnr']:4.1f}" for c in ("amplitude", "phase")) + agreed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--from-model", action="store_true",
                        help="self-supervised training starts from --model (default: scratch)")
    parser.add_argument("--refine-seconds", type=float, default=8.0,
                        help="seconds of refinement of the network's image, and of the same "
                             "from a flat object, on each case (i) and (ii) scan (0: none)")
    parser.add_argument("--epie-seconds", type=float, default=60.0,
                        help="seconds of the refinement from a flat object on each case (i) "
                             "scan, the reference of what its frames allow (0: none)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model, manifest = load_model(args.model, args.model_dir)
    known = manifest.instrument
    report, pictures = [], {}
    print(f"model {args.model}: object pixel {manifest.object_pixel_size * 1e9:.1f} nm; columns: "
          "SSIM/flat SSIM, correlation, PSNR/flat PSNR (dB), amplitude then phase", flush=True)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        for kind, seed in KNOWN_CASES:
            frames, positions, truth, pixel = scan_of(known, kind, seed, args.points,
                                                      work_dir / "scan.cxi")
            scores, images, aligned, mosaic = network(model, manifest, frames, positions,
                                                      truth, pixel)
            name = f"(i) known probe, {kind} (seed {seed})"
            print(row(name, scores), flush=True)
            report.append({"case": name, **scores})
            pictures[name] = images
            pictures[f"truth: {kind}"] = (np.abs(aligned), np.angle(aligned))
            runs = [(f"network + refinement ({args.refine_seconds:.0f} s", args.refine_seconds,
                     mosaic, RELAXED),
                    (f"refinement from flat ({args.refine_seconds:.0f} s", args.refine_seconds,
                     None, RELAXED),
                    (f"ePIE's step from flat ({args.refine_seconds:.0f} s", args.refine_seconds,
                     None, 1.0),
                    (f"refinement from flat ({args.epie_seconds:.0f} s", args.epie_seconds, None,
                     RELAXED)]
            for title, seconds, start, relaxed in runs:
                if not seconds:
                    continue
                scores, images, sweeps, refinement = refined(known, frames, positions, truth,
                                                             pixel, seconds, start, relaxed)
                name = f"(i) {title}, {sweeps} sweeps)"
                print(row(name, scores), flush=True)
                report.append({"case": f"{name} {kind}", "sweeps": sweeps, **scores})
                if start is not None:
                    pictures[f"{name} {kind}"] = images
                    scores, images = filtered(refinement, frames, positions, known, truth,
                                              pixel)
                    print(filtered_row(name, scores), flush=True)
                    report.append({"case": f"{name} {kind}, amplitude filtered", **scores})
                    pictures[f"{name} {kind}, amplitude filtered"] = images
        unseen = Instrument(known.geometry, named_probe(UNSEEN_PROBE, known.window,
                                                        known.object_pixel_size),
                            known.photons)
        for kind in UNSEEN_KINDS:
            scan = work_dir / f"{kind}.cxi"
            frames, positions, truth, pixel = scan_of(unseen, kind, 401, args.points, scan)
            scores, images, aligned, mosaic = network(model, manifest, frames, positions,
                                                      truth, pixel)
            name = f"(ii) {UNSEEN_PROBE} + {kind}: as shipped"
            print(row(name, scores), flush=True)
            report.append({"case": name, **scores})
            pictures[name] = images
            pictures[f"truth: {kind}"] = (np.abs(aligned), np.angle(aligned))
            tuned, tuned_manifest, seconds = fine_tune(
                scan, args.model if args.from_model else None, args.model_dir,
                args.finetune_epochs, work_dir)
            scores, images, _, mosaic = network(tuned, tuned_manifest, frames, positions,
                                                truth, pixel)
            scores["finetune_seconds"] = seconds
            how = "fine-tuned" if args.from_model else "trained on its frames"
            name = f"(ii) {UNSEEN_PROBE} + {kind}: {how} ({seconds:.0f} s)"
            print(row(name, scores), flush=True)
            report.append({"case": name, **scores})
            pictures[name] = images
            if args.refine_seconds:
                refined_scores, refined_images, sweeps, refinement = refined(
                    unseen, frames, positions, truth, pixel, args.refine_seconds, mosaic)
                title = (f"(ii) {UNSEEN_PROBE} + {kind}: {how}, refined "
                         f"({args.refine_seconds:.0f} s, {sweeps} sweeps)")
                print(row(title, refined_scores), flush=True)
                report.append({"case": title, "sweeps": sweeps, **refined_scores})
                pictures[f"{title} {kind}"] = refined_images
                refined_scores, refined_images = filtered(refinement, frames, positions, unseen,
                                                          truth, pixel)
                print(filtered_row(title, refined_scores), flush=True)
                report.append({"case": f"{title}, amplitude filtered", **refined_scores})
                pictures[f"{title} {kind}, amplitude filtered"] = refined_images
            budget = seconds + scores["seconds"] + args.refine_seconds
            epie_scores, epie_images, sweeps, refinement = refined(unseen, frames, positions,
                                                                   truth, pixel, budget)
            name = f"(iii) refinement from flat, the same time ({budget:.0f} s, {sweeps} sweeps)"
            print(row(name, epie_scores), flush=True)
            report.append({"case": f"{name} {kind}", "sweeps": sweeps, **epie_scores})
            pictures[f"{name} {kind}"] = epie_images
            # filtered, at the time of the fine-tune, the network, the refinement and its
            # half-scans together
            whole = budget - args.refine_seconds + with_half_scans(args.refine_seconds)
            _, _, sweeps, refinement = refined(unseen, frames, positions, truth, pixel,
                                               whole / with_half_scans(1.0))
            epie_scores, epie_images = filtered(refinement, frames, positions, unseen, truth,
                                                pixel)
            name = (f"(iii) refinement from flat, the same time ({refinement.seconds:.0f} s, "
                    f"{sweeps} sweeps)")
            print(filtered_row(name, epie_scores), flush=True)
            report.append({"case": f"{name} {kind}, amplitude filtered", **epie_scores})
            pictures[f"{name} {kind}, amplitude filtered"] = epie_images
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_pictures(args.out / "fidelity.png", f"fidelity of {args.model}", pictures)
    print(f"wrote {args.out}/report.json and fidelity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
