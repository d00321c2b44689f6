"""`ptychoedge evaluate`: how good the reconstructions are, per backend and precision.

A simulated scan of a sample the model never saw (the live simulator's default,
seed 0) is reconstructed frame by frame and stitched. SSIM and PSNR of
amplitude and phase are measured against the simulator's ground truth, per
patch (the central window the model reconstructs) and for the mosaic (where the
probe lit it well). Writes a JSON report and PNG pictures of each mosaic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ptychoedge.inference.backends import BackendError, open_model
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, ModelError, load_manifest
from ptychoedge.inference.metrics import psnr, ssim
from ptychoedge.inference.mosaic import Mosaic
from ptychoedge.sim import physics

log = logging.getLogger("ptychoedge.evaluate")

AMPLITUDE_RANGE = 1.0
PHASE_RANGE = 2 * np.pi
BATCH = 32


def evaluate_scan(model_name: str, model_dir: Path | None, scan: Path, reference: Path | None,
                  out: Path, backend_choice: str = "torch:fp32") -> dict:
    """A recorded scan through the model, stitched and scored against `reference` (an
    object file: CXI or .npz, see training_data.read_object), or the scan's own object."""
    from ptychoedge.inference.batcher import Reconstructor
    from ptychoedge.inference.comparison import compare
    from ptychoedge.inference.reconstruct import reconstruct, save_pictures
    from ptychoedge.inference.scan_file import load_scan
    from ptychoedge.inference.training_data import read_object

    kind, _, precision = backend_choice.partition(":")
    backend, manifest = open_model(kind, precision or "fp32", model_name, model_dir or MODEL_DIR,
                                   threads=0)
    frames, positions = load_scan(scan)
    obj, pixel, origin = read_object(reference or scan)
    result = reconstruct(frames, positions, Reconstructor(backend, manifest), progress=True)
    scores, aligned = compare(result.mosaic, obj, pixel, origin)
    report = {"model": model_name, "scan": str(scan), "reference": str(reference or scan),
              "frames": len(frames), "refused": dict(result.refused),
              "residual_median": float(np.nanmedian(result.residuals)), **scores}
    out.mkdir(parents=True, exist_ok=True)
    mask = result.mosaic.coverage()
    amplitude, phase = result.mosaic.images()
    save_pictures(out / "comparison.png",
                  f"{model_name} on {scan.name}: correlation amplitude "
                  f"{scores['amplitude_correlation']:.2f}, phase {scores['phase_correlation']:.2f}",
                  {"reconstruction": (amplitude * mask, phase * mask),
                   "reference (aligned)": (np.abs(aligned) * mask, np.angle(aligned) * mask)})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_scan_report(report: dict) -> None:
    for name in ("amplitude", "phase"):
        print(f"{name:>9}: SSIM {report[f'{name}_ssim']:.3f} "
              f"(flat {report[f'flat_{name}_ssim']:.3f})  correlation "
              f"{report[f'{name}_correlation']:.3f} (flat 0)  PSNR "
              f"{report[f'{name}_psnr']:.1f} dB (flat {report[f'flat_{name}_psnr']:.1f})")
    print(f"residual median {report['residual_median']:.3f}; frames refused: "
          f"{report['refused'] or 'none'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="folder holding the model's bundle (<name>.pt, .json, "
                             ".probe.npy; default: the models shipped with ptychoedge)")
    parser.add_argument("--scan", type=Path, metavar="SCAN.cxi",
                        help="score on this recorded scan instead of a simulated one, against "
                             "--reference or the scan's own object (entry_1/image_1/data)")
    parser.add_argument("--reference", type=Path, metavar="FILE",
                        help="reference object for --scan: CXI (entry_1/image_1/data with "
                             "x_pixel_size) or .npz (object, pixel_size[, origin])")
    parser.add_argument("--backends", nargs="+", default=["torch:fp32", "onnxruntime:fp32",
                                                          "onnxruntime:int8"],
                        metavar="BACKEND:PRECISION", help="what to evaluate (default: %(default)s)")
    parser.add_argument("--points", type=int, default=400, help="scan points (Fermat spiral)")
    parser.add_argument("--step", type=float, default=0.25, help="scan step (um)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (0: the live default)")
    parser.add_argument("--photons", type=float, default=1e6,
                        help="photons a simulated frame collects with no sample in the beam: "
                             "the dose, and so the noise (default %(default)g)")
    parser.add_argument("--out", type=Path, default=Path("evaluation"),
                        help="folder for report.json and the PNG pictures")


def simulate(manifest, points: int, step_um: float, seed: int, photons: float):
    simulator = physics.simulator_for(manifest.instrument, photons=photons, seed=seed)
    positions = physics.fermat_spiral_positions(points, step_um * 1e-6)
    frames, truth = simulator.frames(positions)
    return frames, manifest.preprocessing.targets(truth), positions


def mosaic_of(patches: np.ndarray, positions: np.ndarray, manifest) -> Mosaic:
    mosaic = Mosaic.for_model(manifest)
    for (amplitude, phase), (x, y) in zip(patches, positions, strict=True):
        mosaic.add(amplitude, phase, x, y)
    return mosaic


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean per-patch SSIM and PSNR of amplitude and phase, (n, 2, s, s) arrays."""
    result = {}
    for channel, name, data_range in ((0, "amplitude", AMPLITUDE_RANGE),
                                      (1, "phase", PHASE_RANGE)):
        result[f"{name}_ssim"] = float(np.mean([
            ssim(p[channel], t[channel], data_range) for p, t in zip(predicted, truth,
                                                                     strict=True)]))
        result[f"{name}_psnr"] = float(np.mean([
            psnr(p[channel], t[channel], data_range) for p, t in zip(predicted, truth,
                                                                     strict=True)]))
    return result


def mosaic_scores(mosaic: Mosaic, truth: Mosaic) -> dict[str, float]:
    return image_scores(mosaic.images(), truth)


def image_scores(images: tuple[np.ndarray, np.ndarray], truth: Mosaic) -> dict[str, float]:
    """Scores of stitched amplitude and phase images laid out on `truth`'s canvas."""
    covered = truth.coverage()
    rows, cols = np.nonzero(covered)
    window = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    result = {}
    for index, name, data_range in ((0, "amplitude", AMPLITUDE_RANGE), (1, "phase", PHASE_RANGE)):
        got, want = images[index][window], truth.images()[index][window]
        mask = covered[window]
        result[f"mosaic_{name}_ssim"] = ssim(got, want, data_range, mask)
        result[f"mosaic_{name}_psnr"] = psnr(got[mask], want[mask], data_range)
        # SSIM alone is weak here: a flat image at the truth's mean scores well.
        result[f"mosaic_{name}_correlation"] = (
            float(np.corrcoef(got[mask], want[mask])[0, 1]) if np.ptp(got[mask]) > 0 else 0.0)
    return result


def save_pictures(path: Path, title: str, mosaic: Mosaic | tuple[np.ndarray, np.ndarray],
                  truth: Mosaic) -> None:
    """Amplitude and phase of a mosaic (or of its images) above the ground truth's."""
    from ptychoedge.inference.reconstruct import save_pictures as save_rows

    reconstruction = mosaic.images() if isinstance(mosaic, Mosaic) else mosaic
    save_rows(path, title, {"reconstruction": reconstruction, "ground truth": truth.images()})


def evaluate(model_name: str, model_dir: Path | None, backends: list[str], points: int, step: float,
             seed: int, photons: float, out: Path) -> list[dict]:
    manifest = load_manifest(model_name, model_dir or MODEL_DIR)
    frames, targets, positions = simulate(manifest, points, step, seed, photons)
    truth_mosaic = mosaic_of(targets, positions, manifest)
    inputs = manifest.preprocessing.canonical(manifest.instrument.window).frames(frames)
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for choice in backends:
        kind, _, precision = choice.partition(":")
        try:
            backend, _ = open_model(kind, precision or "fp32", model_name,
                                    model_dir or MODEL_DIR, threads=0)
        except BackendError as error:
            print(f"{choice}: skipped: {error}", file=sys.stderr)
            continue
        started = time.perf_counter()
        predicted = np.concatenate([backend.infer(inputs[i:i + BATCH])
                                    for i in range(0, len(inputs), BATCH)])
        seconds = time.perf_counter() - started
        mosaic = mosaic_of(predicted, positions, manifest)
        entry = {"backend": kind, "precision": precision or "fp32", "frames": len(frames),
                 "seconds": seconds, **scores(predicted, targets),
                 **mosaic_scores(mosaic, truth_mosaic)}
        picture = out / f"mosaic-{kind}-{entry['precision']}.png"
        save_pictures(picture, f"{model_name}, {choice}: mosaic SSIM amplitude "
                      f"{entry['mosaic_amplitude_ssim']:.3f}, phase "
                      f"{entry['mosaic_phase_ssim']:.3f}", mosaic, truth_mosaic)
        entry["picture"] = str(picture)
        report.append(entry)
        print(f"{choice:>18}: patch SSIM amp {entry['amplitude_ssim']:.3f} phase "
              f"{entry['phase_ssim']:.3f} | mosaic SSIM amp {entry['mosaic_amplitude_ssim']:.3f} "
              f"phase {entry['mosaic_phase_ssim']:.3f} | mosaic correlation amp "
              f"{entry['mosaic_amplitude_correlation']:.2f} phase "
              f"{entry['mosaic_phase_correlation']:.2f} | PSNR amp {entry['amplitude_psnr']:.1f} "
              f"phase {entry['phase_psnr']:.1f} dB | {1e3 * seconds / len(frames):.2f} ms/frame",
              flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    if args.scan:
        from ptychoedge.inference.comparison import ComparisonError
        from ptychoedge.inference.scan_file import ScanFileError
        from ptychoedge.inference.training_data import ScanError
        try:
            report = evaluate_scan(args.model, args.model_dir, args.scan, args.reference,
                                   args.out, args.backends[0])
        except (ModelError, ScanError, ScanFileError, ComparisonError, BackendError) as error:
            raise SystemExit(f"ptychoedge evaluate: error: {error}") from None
        print_scan_report(report)
        print(f"report and picture in {args.out}/")
        return 0
    try:
        evaluate(args.model, args.model_dir, args.backends, args.points, args.step, args.seed,
                 args.photons, args.out)
    except ModelError as error:
        raise SystemExit(f"ptychoedge evaluate: error: {error}") from None
    print(f"report and pictures in {args.out}/")
    return 0
