"""`ptychoedge reconstruct`: a recorded scan through a model, offline.

Every frame of the scan (CXI or .npz, see inference/scan_file.py) is reconstructed and the
patches are stitched at the model's object pixel, exactly as the live pipeline does.
Writes `reconstruction.png` (amplitude and phase), `reconstruction.cxi` (the complex
object at `entry_1/image_1/data`, its pixel size at `x_pixel_size`/`y_pixel_size`,
scan position 0 at pixel `origin`), `residuals.npy` (one per frame) and `report.json`.
Frames the model refuses (another geometry, a malformed frame) are counted by kind
and left out; the rest go on.

With `--refine SECONDS`, the network's image is then refined through the physics on the
frames it took (refine.py), the probe with it (unless `--fixed-probe`), and written
beside it: `refined.cxi` (the object, and the instrument with the refined probe: an
instrument file for `ptychoedge train --instrument` or the pipeline's `AdaptInstrument`),
a second row in the picture, and in the report the Fourier error before and after and
how far the probe moved. The even and the odd frames are then refined apart for a third of
that time each (resolution.py): `resolution.png` (their Fourier ring correlation), the
resolution in the report, and `filtered.cxi`, the refined object with its amplitude
filtered to what the two halves share (a third row in the picture).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from ptychoedge.inference.backends import BackendError, open_model
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.instrument import (
    MASK_PATH,
    SAMPLED,
    Instrument,
    InstrumentError,
    never_counted,
    put_instrument,
)
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, Manifest, ModelError
from ptychoedge.inference.mosaic import Mosaic, Overlap, agreement
from ptychoedge.inference.preprocess import FrameError
from ptychoedge.inference.quality import Spread
from ptychoedge.inference.refine import (
    PROBE_FROM,
    network_start,
    probe_overlap,
    refine,
    scan_instrument,
)
from ptychoedge.inference.resolution import FEWEST_FRAMES, HALVES_SHARE, Resolution, half_scans
from ptychoedge.pvdb.processors import AGREES, EXPLAINS, disagree, one_answer

log = logging.getLogger("ptychoedge.reconstruct")

BATCH = 32


@dataclass
class Reconstruction:
    mosaic: Mosaic
    residuals: np.ndarray  # per frame; NaN for a refused one
    refused: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    spread: Spread | None = None  # of the frames taken (None: none was)
    # how each patch that met earlier ones agreed with them where they overlap
    overlaps: list[Overlap] = field(default_factory=list)


def reconstruct(frames: np.ndarray, positions: np.ndarray, reconstructor: Reconstructor,
                progress: bool = False) -> Reconstruction:
    """Reconstruct and stitch `frames` (n, ny, nx) at `positions` (n, 2) m."""
    manifest = reconstructor.manifest
    result = Reconstruction(Mosaic.for_model(manifest),
                            np.full(len(frames), np.nan))
    started = time.perf_counter()
    for start in range(0, len(frames), BATCH):
        chosen = range(start, min(start + BATCH, len(frames)))
        try:
            batches = [(list(chosen), reconstructor([frames[i] for i in chosen]))]
        except FrameError:  # one bad frame must not take the batch with it
            batches = []
            for i in chosen:
                try:
                    batches.append(([i], reconstructor([frames[i]])))
                except FrameError as error:
                    result.refused[error.kind] += 1
                    log.warning("frame %d refused: %s", i, error)
        for indices, batch in batches:
            for i, patch, residual in zip(indices, batch.patches, batch.residuals, strict=True):
                if overlap := result.mosaic.add(patch[0], patch[1], *positions[i]):
                    result.overlaps.append(overlap)
                result.residuals[i] = residual
            result.spread = batch.spread if result.spread is None else result.spread + batch.spread
        if progress:
            sys.stderr.write(f"\rframes {chosen.stop}/{len(frames)}")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    result.seconds = time.perf_counter() - started
    return result


def save_pictures(path: Path, title: str, images: dict[str, tuple[np.ndarray, np.ndarray]]
                  ) -> None:
    """Rows of amplitude and phase, one row per named image pair."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(images), 2, figsize=(9, 4 * len(images)), squeeze=False)
    for row, (name, (amplitude, phase)) in enumerate(images.items()):
        # scaled to what is shown (the 2nd to 98th percentile, not a poorly lit rim's
        # extremes), so that a weak phase's structure is seen
        shown = amplitude > 0
        low, high = np.percentile(amplitude[shown], [2, 98]) if shown.any() else (0, 1)
        axes[row, 0].imshow(amplitude, cmap="gray", vmin=low, vmax=high)
        axes[row, 0].set_title(f"{name}: amplitude")
        low, high = (np.percentile(phase[shown], [2, 98]) if shown.any() else (-np.pi, np.pi))
        wraps = high - low > 1.5 * np.pi  # a cyclic map only for a phase that wraps
        axes[row, 1].imshow(phase, cmap="twilight" if wraps else "viridis", vmin=low,
                            vmax=max(high, low + 1e-3))
        axes[row, 1].set_title(f"{name}: phase (rad)")
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_object(path: Path, amplitude: np.ndarray, phase: np.ndarray, pixel: float,
                 origin: tuple[int, int], instrument: Instrument | None = None) -> None:
    """The stitched object as CXI: complex at entry_1/image_1/data, with its pixel size and
    the pixel (x, y) where scan position 0 lies; and `instrument` where given."""
    with h5py.File(path, "w") as f:
        f.attrs["cxi_version"] = 150
        if instrument is not None:
            put_instrument(f, instrument)
        f["entry_1/image_1/data"] = (amplitude * np.exp(1j * phase)).astype(np.complex64)
        f["entry_1/image_1/x_pixel_size"] = f["entry_1/image_1/y_pixel_size"] = pixel
        f["entry_1/image_1/origin"] = np.array(origin)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", type=Path, help="the recorded scan: .cxi/.h5 or .npz")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="where the model is (default: the shipped models)")
    parser.add_argument("--backend", default="onnxruntime",
                        choices=("torch", "onnxruntime", "tensorrt"),
                        help="inference backend (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("reconstruction"),
                        help="folder for the pictures, the CXI object and the residuals "
                             "(default %(default)s)")
    parser.add_argument("--refine", type=float, default=0.0, metavar="SECONDS",
                        help="then refine the network's image through the physics (ePIE, "
                             "the probe too) for this long, and two half-scans for a third "
                             "of it each (the resolution); 0: do not (default)")
    parser.add_argument("--fixed-probe", action="store_true",
                        help="refine the object only: the probe is known exactly")


def _with_the_scans_mask(manifest: Manifest, scan: Path, frames: np.ndarray) -> Manifest:
    """The model's manifest, where the model has no mask with the scan file's, or else the
    pixels its frames never count (a warning where that mask does not fit the model's
    frames)."""
    if manifest.instrument.mask is not None:
        return manifest
    mask = None
    if scan.suffix in (".cxi", ".h5", ".hdf5"):
        with h5py.File(scan, "r") as f:
            mask = f[MASK_PATH][()] if MASK_PATH in f else None
    if mask is None:
        mask = never_counted(frames[::max(1, len(frames) // SAMPLED)])
    if mask is None:
        return manifest
    try:
        return replace(manifest, instrument=replace(manifest.instrument, mask=mask))
    except InstrumentError as error:
        print(f"warning: the scan's detector mask is not used: {error}", file=sys.stderr)
        return manifest


def run(args: argparse.Namespace) -> int:
    from ptychoedge.inference.scan_file import ScanFileError, load_scan

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not (args.refine >= 0 and np.isfinite(args.refine)):
        print(f"ptychoedge reconstruct: error: --refine takes seconds >= 0, got {args.refine}",
              file=sys.stderr)
        return 2
    try:
        frames, positions = load_scan(args.scan)
        backend, manifest = open_model(args.backend, "fp32", args.model, args.model_dir,
                                       threads=0)
        manifest = _with_the_scans_mask(manifest, args.scan, frames)
        args.out.mkdir(parents=True, exist_ok=True)
    except (ScanFileError, ModelError, BackendError, OSError) as error:
        print(f"ptychoedge reconstruct: error: {error}", file=sys.stderr)
        return 2
    result = reconstruct(frames, positions, Reconstructor(backend, manifest), progress=True)
    amplitude, phase = result.mosaic.images()
    origin = result.mosaic.position_to_pixel(0.0, 0.0)
    write_object(args.out / "reconstruction.cxi", amplitude, phase, manifest.object_pixel_size,
                 origin)
    np.save(args.out / "residuals.npy", result.residuals)
    limits = manifest.residual_limits()
    residual = float(np.nanmedian(result.residuals)) if np.isfinite(result.residuals).any() \
        else float("nan")
    over_noise, explained = result.spread.figures() if result.spread else (0.0, 0.0)
    agreed = agreement(result.overlaps)
    report = {"scan": str(args.scan), "model": args.model, "frames": len(frames),
              "reconstructed": int(np.isfinite(result.residuals).sum()),
              "refused": dict(result.refused), "residual_median": residual,
              "residual_alarm": limits, "frames_over_noise": over_noise,
              "explained": explained,
              "agreement": agreed if np.isfinite(agreed) else None,
              "overlaps": len(result.overlaps),
              "object_pixel_size": manifest.object_pixel_size,
              "seconds": result.seconds}
    pictures = {"reconstruction": (amplitude, phase)}
    written = ["reconstruction.png", "reconstruction.cxi", "residuals.npy", "report.json"]
    taken = np.isfinite(result.residuals)
    refinement = resolution = None
    if args.refine and taken.any():
        try:
            refinement, resolution, given, why = _refined(
                args.scan, frames[taken], positions[taken], manifest, args.refine, result,
                args.fixed_probe)
        except FrameError as error:
            print(f"not refined: the refinement takes the probe's whole "
                  f"{manifest.instrument.window}-pixel window of each frame: {error}",
                  file=sys.stderr)
    if refinement is not None:
        refined = refinement.images()
        write_object(args.out / "refined.cxi", *refined, refinement.pixel_size,
                     refinement.origin, replace(given, probe=refinement.probe))
        report["refined"] = {"seconds": refinement.seconds, "sweeps": refinement.sweeps,
                             "started_from": refinement.started_from, "why": why,
                             "fourier_error": [refinement.errors[0], refinement.errors[-1]],
                             "object_pixel_size": refinement.pixel_size,
                             "probe_refined_from_sweep": None if args.fixed_probe
                             else PROBE_FROM,
                             "probe_overlap_with_given": probe_overlap(refinement.probe,
                                                                       given.probe)}
        pictures[f"refined ({refinement.sweeps} sweeps, {refinement.seconds:.0f} s)"] = refined
        written.insert(2, "refined.cxi")
    if resolution is not None:
        filtered = resolution.filtered_amplitude(np.abs(refinement.obj), refinement.lit)
        write_object(args.out / "filtered.cxi", filtered, refined[1], refinement.pixel_size,
                     refinement.origin)
        resolution.save_plot(args.out / "resolution.png",
                             f"{args.scan.name}: two half-scans refined apart")
        report["refined"]["resolution"] = resolution.report()
        pictures["refined, amplitude filtered"] = (filtered, refined[1])
        written[3:3] = ["filtered.cxi", "resolution.png"]
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_pictures(args.out / "reconstruction.png",
                  f"{args.scan.name} through {args.model}: residual median {residual:.3f}",
                  pictures)
    print(f"{report['reconstructed']} of {len(frames)} frames reconstructed "
          f"({sum(result.refused.values())} refused) in {result.seconds:.1f} s; residual "
          f"median {residual:.3f}; the images explain {explained:.1%} of how the frames "
          f"differ (they differ {over_noise:.1f}x their noise); neighbouring images agree "
          f"{agreed:.0%} where they overlap")
    if "refined" in report:
        first, last = report["refined"]["fourier_error"]
        print(f"refined from {report['refined']['started_from']} "
              f"({report['refined']['why']}): "
              f"{report['refined']['sweeps']} sweeps, Fourier error {first:.4f} after the "
              f"first, {last:.4f} after the last")
        if not args.fixed_probe:
            print(f"the probe refined from sweep {PROBE_FROM}: its strongest mode overlaps "
                  f"the one given by {report['refined']['probe_overlap_with_given']:.3f} "
                  f"(1: unchanged); refined.cxi holds it with the geometry")
    if resolution is not None:
        print(f"resolution (two half-scans, {resolution.seconds:.0f} s, half-bit): the object "
              f"{resolution.half_period(resolution.object_frc) * 1e9:.0f} nm, its amplitude "
              f"{resolution.half_period(resolution.amplitude_frc) * 1e9:.0f} nm; filtered.cxi "
              "holds the amplitude filtered to it")
    if limits and residual > limits[0]:
        print(f"warning: the residual is above the model's alarm limit {limits[0]:.3f}: these "
              "frames are unlike what the model was trained for (another probe, geometry or "
              "sample); train for this instrument (ptychoedge train --scan)")
    if one_answer(over_noise, explained):
        print(f"warning: the images explain under {EXPLAINS:.0%} of how the frames differ: "
              "nearly one image for every frame, not this sample; refine it (--refine) or "
              "train on the scan (ptychoedge train --scan)")
    elif disagree(over_noise, agreed, len(result.overlaps)):
        print(f"warning: neighbouring images disagree where they overlap (agreement "
              f"{agreed:.0%}, under {AGREES:.0%}): positions out of step with the frames, or "
              "images that are not this sample; check the positions, then refine (--refine) "
              "or train on the scan (ptychoedge train --scan)")
    print(f"wrote {args.out}/{', '.join(written)}")
    return 0


def _refined(scan: Path, frames: np.ndarray, positions: np.ndarray, manifest, seconds: float,
             network: Reconstruction, fixed_probe: bool):
    """The network's image refined on `frames` (those it took), what two half-scans refined
    apart resolve (None for a scan too short to halve), the instrument it was given, and
    why it started where it did."""

    def progress(what: str, seconds: float):
        def told(refinement) -> None:
            sys.stderr.write(f"\r{what}: sweep {refinement.sweeps}, Fourier error "
                             f"{refinement.errors[-1]:.4f}, {refinement.seconds:.0f} of "
                             f"{seconds:.0f} s")
            sys.stderr.flush()
        return told

    start, why = network_start(network.mosaic, network.residuals, manifest)
    given = scan_instrument(scan, manifest)
    orientation = manifest.preprocessing.orientation
    refinement = refine(frames, positions, given, orientation, seconds, start,
                        progress("refining", seconds),
                        probe_from=None if fixed_probe else PROBE_FROM)
    sys.stderr.write("\n")
    resolution: Resolution | None = None
    if len(frames) >= FEWEST_FRAMES:
        resolution = half_scans(frames, positions, given, orientation, refinement,
                                seconds * HALVES_SHARE,
                                progress("each half-scan", seconds * HALVES_SHARE))
        sys.stderr.write("\n")
    else:
        print(f"not resolved: {len(frames)} frames refined, and two half-scans need at least "
              f"{FEWEST_FRAMES}", file=sys.stderr)
    return refinement, resolution, given, why
