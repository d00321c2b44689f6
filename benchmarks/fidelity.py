"""Fidelity: is the stitched image true, for the model's instrument and for one it never saw?

Held-out simulated scans are reconstructed and stitched as the pipeline does, then
scored against the ground truth (aligned, phase offset removed), amplitude and phase
apart: SSIM, Pearson correlation and PSNR, each beside a flat image's (a constant at
the truth's mean). The cases:

  (i)   the model's own instrument and sample families, on samples it never saw, and
        beside each, ePIE with the known probe on every detector pixel (the exact
        forward model) for --epie-seconds: what the frames themselves allow;
  (ii)  a probe and a sample family it never saw: the model as shipped, then a model
        trained self-supervised on that scan's own frames (no labels: `ptychoedge train
        --scan SCAN`, from scratch, or from the model with --from-model), and
  (iii) ePIE (numpy, known probe, the same detector crop and object pixel as the
        network) on the same scan, given the fine-tune's CPU time plus the network's.

Prints a table and writes benchmark-logs/fidelity/{report.json,fidelity.png}.

    python benchmarks/fidelity.py [--points 300] [--finetune-epochs 30] [--model NAME]
        [--from-model] [--epie-seconds 60]
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
from ptychoedge.inference.instrument import Instrument, write_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, Manifest, load_model
from ptychoedge.inference.reconstruct import reconstruct, save_pictures
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
               "residual_median": float(np.nanmedian(result.residuals))}
    return scores, (amplitude, phase), aligned, mosaic


def epie(manifest: Manifest, frames, positions, mosaic, seconds: float):
    """ePIE with the known probe (object only) on the network's crop and object pixel, on
    the mosaic's canvas, for `seconds`; the object and the iterations done."""
    counts = manifest.preprocessing.canonical().binned(frames, check_beam=False)
    probe = manifest.probe
    n = probe.shape[-1]
    corners = [np.array(mosaic.position_to_pixel(x, y)) - n // 2 for x, y in positions]
    return _epie(counts / manifest.instrument.photons, probe, corners,
                 mosaic.images()[0].shape, seconds)


def epie_whole_detector(instrument: Instrument, frames, positions, seconds: float):
    """ePIE with the known probe on every detector pixel (the exact forward model, the
    instrument's own object pixel) for `seconds`: what the frames allow, as a reference
    for the network. The object, its well-lit mask, the canvas pixel of scan position 0,
    and the iterations done."""
    pixel, n = instrument.object_pixel_size, instrument.window
    spots = np.rint(positions / pixel).astype(int)
    zero = -spots.min(axis=0) + n // 2
    shape = tuple((spots.max(axis=0) - spots.min(axis=0) + n)[::-1])
    corners = [zero + spot - n // 2 for spot in spots]
    obj, iterations = _epie(frames / instrument.photons, instrument.probe, corners, shape,
                            seconds)
    light = np.zeros(shape)
    intensity = np.sum(np.abs(instrument.probe) ** 2, axis=0)
    for x, y in corners:
        light[y:y + n, x:x + n] += intensity
    # well lit as the mosaic's coverage counts it: at least half the probe's mean
    return obj, light >= 0.5 * intensity.mean(), (int(zero[0]), int(zero[1])), iterations


def _epie(intensities, probe, corners, canvas_shape, seconds: float, seed: int = 0):
    """The object on a canvas of `canvas_shape` after ePIE sweeps (random order) for
    `seconds` of CPU; `intensities` (n, s, s) per incident photon, `corners` (x, y) of
    each frame's field."""
    magnitude = np.fft.ifftshift(np.sqrt(np.clip(intensities, 0, None)), axes=(-2, -1))
    probe = probe.astype(np.complex128)
    n = probe.shape[-1]
    step = 1.0 / np.sum(np.abs(probe) ** 2, axis=0).max()
    obj = np.ones(canvas_shape, np.complex128)
    rng = np.random.default_rng(seed)
    started, iterations = time.process_time(), 0
    while time.process_time() - started < seconds:
        for j in rng.permutation(len(corners)):
            x, y = corners[j]
            patch = obj[y:y + n, x:x + n]
            exit_waves = probe * patch
            far = np.fft.fft2(exit_waves, norm="ortho")
            total = np.sqrt(np.sum(np.abs(far) ** 2, axis=0)) + 1e-12
            revised = np.fft.ifft2(far * (magnitude[j] / total), norm="ortho")
            patch += step * np.sum(np.conj(probe) * (revised - exit_waves), axis=0)
        iterations += 1
    return obj, iterations


def fine_tune(scan: Path, parent: str | None, model_dir: Path, epochs: int, out_dir: Path):
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    start = ["--from", parent, "--model-dir", str(model_dir)] if parent else []
    options = parser.parse_args(["--scan", str(scan), *start, "--name", "finetuned",
                                 "--out-dir", str(out_dir), "--epochs", str(epochs),
                                 "--batch-size", "16", "--lr", "2e-3"])
    started = time.process_time()
    model, manifest = training.train(options)
    return model.eval(), manifest, time.process_time() - started


def row(name: str, scores: dict) -> str:
    return (f"{name:<46} " + "  ".join(
        f"{scores[f'{c}_ssim']:.3f}/{scores[f'flat_{c}_ssim']:.3f} "
        f"{scores[f'{c}_correlation']:+.2f} {scores[f'{c}_psnr']:5.1f}/"
        f"{scores[f'flat_{c}_psnr']:4.1f}" for c in ("amplitude", "phase")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--from-model", action="store_true",
                        help="self-supervised training starts from --model (default: scratch)")
    parser.add_argument("--epie-seconds", type=float, default=60.0,
                        help="CPU seconds of whole-detector ePIE on each case (i) scan, the "
                             "reference of what its frames allow (0: none)")
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
            scores, images, aligned, _ = network(model, manifest, frames, positions, truth,
                                                 pixel)
            name = f"(i) known probe, {kind} (seed {seed})"
            print(row(name, scores), flush=True)
            report.append({"case": name, **scores})
            pictures[name] = images
            pictures[f"truth: {kind}"] = (np.abs(aligned), np.angle(aligned))
            if args.epie_seconds:
                obj, lit, zero, iterations = epie_whole_detector(known, frames, positions,
                                                                 args.epie_seconds)
                amplitude, phase = np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)
                epie_scores, _ = compare_images(amplitude, phase, lit, known.object_pixel_size,
                                                zero, truth, pixel)
                name = (f"(i) ePIE, whole detector, {kind} ({args.epie_seconds:.0f} s, "
                        f"{iterations} iterations)")
                print(row(name, epie_scores), flush=True)
                report.append({"case": name, "iterations": iterations, **epie_scores})
                pictures[name] = (amplitude * lit, phase * lit)
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
            budget = seconds + scores["seconds"]
            obj, iterations = epie(tuned_manifest, frames, positions, mosaic, budget)
            amplitude, phase = np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)
            epie_scores, _ = compare_images(amplitude, phase, mosaic.coverage(),
                                            mosaic.pixel_size, mosaic.position_to_pixel(0, 0),
                                            truth, pixel)
            name = f"(iii) ePIE, same CPU time ({iterations} iterations)"
            print(row(name, epie_scores), flush=True)
            report.append({"case": name, "iterations": iterations, **epie_scores})
            mask = mosaic.coverage()
            pictures[f"{name} {kind}"] = (amplitude * mask, phase * mask)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_pictures(args.out / "fidelity.png", f"fidelity of {args.model}", pictures)
    print(f"wrote {args.out}/report.json and fidelity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
