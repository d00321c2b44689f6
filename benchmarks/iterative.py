"""Iterative reference: ePIE (ptychi) against the network on the same simulated scan.

One Fermat-spiral scan of the simulated sample is reconstructed twice: by ePIE from
the `ptychi` package with the known probe, iteration after iteration, and by the
shipped PtychoNN model frame by frame, stitched into a mosaic. Both are scored
against the ground truth with SSIM and Pearson correlation of amplitude and phase on
the same pixels (where the centre of the probe lit the sample well), ePIE after
removing its arbitrary global phase. SSIM alone flatters a blurry image (a flat one
at the truth's mean scores 0.54/0.84 here, see inference/MODELS.md); the correlation
tells structure from the mean. It prints ePIE's scores against iterations and wall
time, the time ePIE needs to reach the network's scores, the time per frame of each
and their ratio, and writes a PNG of the scores against time with the images side
by side.

ptychi cannot be imported beside this project's torch build, so it runs in a
virtual environment of its own (made here once, `--venv`), in
`benchmarks/iterative_worker.py`.

    python benchmarks/iterative.py [--points 400] [--iterations 100] [--skip-install]
        [--backend onnxruntime] [--precision fp32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ptychoedge.sim import physics

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("iterative_worker.py")
PTYCHI_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "ptychi==2.2.0")
DETECTOR, PROBE_DIAMETER, DEFOCUS, PHOTONS, STEP = 128, 64, 6.0, 1e6, 0.25e-6
SCORED_WINDOW = 64  # the network's output window: the well-lit centre of the probe
MARGIN = 8  # object pixels around the scanned area in ePIE's object
AMPLITUDE_RANGE, PHASE_RANGE = 1.0, 2 * np.pi  # as in `ptychoedge evaluate`
BATCH = 32
PASSES = 3  # the network's timed passes over the scan


# --- scoring -------------------------------------------------------------------------

def _gaussian_filter(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Separable Gaussian blur, reflecting at the edges (as a sum of shifted copies)."""
    radius = int(3.5 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        padded = np.pad(image, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
                        mode="symmetric")
        length = image.shape[axis]
        image = sum(weight * padded.take(range(i, i + length), axis=axis)
                    for i, weight in enumerate(kernel))
    return image


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Gaussian-window (sigma 1.5) SSIM of Wang et al. (2004), pixel by pixel."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a**2
    var_b = _gaussian_filter(b * b) - mu_b**2
    cov = _gaussian_filter(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
            / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))


def region_scores(image: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SSIM of amplitude and phase averaged over `mask`, and their correlation with the
    truth over `mask` ("amplitude_correlation", "phase_correlation").

    The global phase offset (arbitrary for ePIE) is the mean phase difference over the
    mask and is taken out first. The SSIM map is averaged over the mask only: blanking
    the rest in both images, as `ptychoedge evaluate` does for mosaics, gives a flat
    guess a high score from the blank's shared edges.
    """
    offset = np.angle(np.sum((image * np.conj(truth))[mask]))
    image = image * np.exp(-1j * offset)
    rows, cols = np.nonzero(mask)
    pad = 8  # the filter's reach, so pixels just outside the mask count as context
    box = np.s_[max(rows.min() - pad, 0):rows.max() + pad + 1,
                max(cols.min() - pad, 0):cols.max() + pad + 1]
    result = {"phase_offset": float(offset)}
    for name, part, data_range in (("amplitude", np.abs, AMPLITUDE_RANGE),
                                   ("phase", np.angle, PHASE_RANGE)):
        score = ssim_map(part(image[box]), part(truth[box]), data_range)
        result[name] = float(score[mask[box]].mean())
        result[f"{name}_correlation"] = float(np.corrcoef(part(image)[mask],
                                                          part(truth)[mask])[0, 1])
    return result


# --- the scan ------------------------------------------------------------------------

def simulate(points: int):
    """The scan, ePIE's object grid and the truth and scoring mask on that grid.

    ePIE's object has an even size (h, w); ptychi puts position 0 at its pixel
    (h/2 - 0.5, w/2 - 0.5), which makes object pixel (r, c) the sample pixel
    (r, c) + sample centre - (h/2, w/2): the same pixels as the simulator's windows.
    """
    probe = physics.make_probe(DETECTOR, PROBE_DIAMETER, DEFOCUS)
    simulator = physics.PtychographySimulator(DETECTOR, photons=PHOTONS, seed=0, probe=probe)
    positions = physics.fermat_spiral_positions(points, STEP)
    frames, _ = simulator.frames(positions)
    offsets = np.rint(positions / simulator.pixel_size).astype(int)  # (x, y) pixels, as simulated
    positions_px = offsets[:, ::-1]  # ptychi: column 0 is y
    half = int(np.abs(positions_px).max()) + DETECTOR // 2 + MARGIN
    shape = (2 * half, 2 * half)
    centre = np.array(simulator.sample.shape) // 2
    top, left = centre - half
    if top < 0 or left < 0 or top + shape[0] > simulator.sample.shape[0]:
        raise SystemExit(f"iterative benchmark: a {points}-point scan leaves the simulated sample")
    truth = simulator.sample[top:top + shape[0], left:left + shape[1]]
    # Scored where the network puts its patches (the central window of each frame) and
    # the probe lit the sample: total illumination at least a fifth of its median there.
    # (Not half the peak: this probe is a ring, dark in its centre, and where rings cross
    # the sum peaks at twice its typical value; that rule punches a hole at every point.)
    lit, placed = np.zeros(shape), np.zeros(shape, bool)
    illumination = simulator.illumination()
    start = (DETECTOR - SCORED_WINDOW) // 2
    for y, x in positions_px + half - DETECTOR // 2:
        lit[y:y + DETECTOR, x:x + DETECTOR] += illumination
        placed[y + start:y + start + SCORED_WINDOW, x + start:x + start + SCORED_WINDOW] = True
    mask = placed & (lit >= 0.2 * np.median(lit[placed]))
    return simulator, positions, frames, positions_px, truth, mask


# --- ePIE ----------------------------------------------------------------------------

def ensure_venv(venv: Path, skip_install: bool) -> Path:
    python = venv / "bin" / "python"
    if skip_install and not python.is_file():
        raise SystemExit(f"iterative benchmark: no virtual environment at {venv}")
    if skip_install or python.is_file() and subprocess.run(
            [python, "-c", "import ptychi, torchvision"], capture_output=True).returncode == 0:
        print(f"ptychi environment: {venv} (reused)", flush=True)
        return python
    print(f"making the ptychi environment at {venv} (about 6 GB, a few minutes)", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--progress-bar", "on",
                    *PTYCHI_REQUIREMENTS], check=True)
    print(f"ptychi environment ready in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def run_epie(python: Path, scan: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [python, WORKER, scan, out, "--iterations", str(args.iterations),
               "--batch", str(args.batch), "--alpha", str(args.alpha),
               "--threads", str(args.threads)]
    if args.probe_update:
        command.append("--probe-update")
    subprocess.run(command, check=True)
    with np.load(out) as data:
        return {name: data[name] for name in data.files}


# --- the network ---------------------------------------------------------------------

def run_network(frames, positions, truth_shape, threads: int, model_name: str,
                backend_kind: str, precision: str) -> dict | None:
    """The shipped model's reconstruction on ePIE's grid, or None (with a note) if unready."""
    try:
        from ptychoedge.inference.backends import open_backend
        from ptychoedge.inference.evaluate import mosaic_of
        from ptychoedge.inference.manifest import load_model
        model, manifest = load_model(model_name)
    except (ImportError, ValueError) as error:
        print(f"network: skipped, not ready in this checkout ({error})", flush=True)
        return None
    backend = open_backend(backend_kind, precision, model, manifest, threads=threads)
    inputs = manifest.preprocessing.frames(frames[:BATCH])
    backend.infer(inputs)  # warm-up, as a running pipeline would be
    # The fastest of a few passes: the machine may be shared, and a pass that another
    # process slowed down says nothing about the method (ePIE's time is taken likewise,
    # from its median iteration).
    inference_s = stitch_s = np.inf
    for _ in range(PASSES):
        started = time.perf_counter()
        inputs = manifest.preprocessing.frames(frames)
        patches = np.concatenate([backend.infer(inputs[i:i + BATCH])
                                  for i in range(0, len(inputs), BATCH)])
        inferred = time.perf_counter()
        mosaic = mosaic_of(patches, positions, manifest)
        amplitude, phase = mosaic.images()
        inference_s = min(inference_s, inferred - started)
        stitch_s = min(stitch_s, time.perf_counter() - inferred)
    # Canvas pixel of position 0 -> object pixel (h/2, w/2) of ePIE's grid.
    column, row = mosaic.position_to_pixel(0.0, 0.0)
    image = np.ones(truth_shape, np.complex64)
    top, left = truth_shape[0] // 2 - row, truth_shape[1] // 2 - column
    canvas = (amplitude * np.exp(1j * phase))
    rows = slice(max(top, 0), min(top + canvas.shape[0], truth_shape[0]))
    cols = slice(max(left, 0), min(left + canvas.shape[1], truth_shape[1]))
    image[rows, cols] = canvas[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return {"image": image, "inference_s": inference_s, "stitch_s": stitch_s,
            "total_s": inference_s + stitch_s,
            "first_batch_s": inference_s * min(BATCH, len(frames)) / len(frames)}


# --- report --------------------------------------------------------------------------

def first_reaching(seconds: np.ndarray, iterations: np.ndarray, scores: np.ndarray,
                   target: float) -> tuple[int, float] | None:
    reached = np.nonzero(scores >= target)[0]
    if not len(reached):
        return None
    iteration = int(iterations[reached[0]])
    return iteration, float(seconds[iteration - 1])


def report_reach(label: str, reached: tuple[int, float] | None, seconds: np.ndarray,
                 frames: int, network_seconds: float) -> None:
    """Where ePIE first reaches the network's `label`, timed as iterations x its median
    iteration (robust to another process's bursts on a shared machine) and as measured."""
    step = float(np.median(np.diff(seconds, prepend=0.0)))
    if reached is None:
        total = len(seconds) * step
        print(f"  ePIE to reach the network's {label}: never within {len(seconds)} "
              f"iterations ({total:.2f} s): > {total / network_seconds:.1f}x the network's "
              f"time")
        return
    iteration, measured = reached
    total = iteration * step
    print(f"  ePIE to reach the network's {label}: {iteration} iterations, {total:.2f} s "
          f"(measured {measured:.2f} s) = {1e3 * total / frames:.2f} ms per frame: "
          f"{total / network_seconds:.1f}x the network's time")


def save_picture(path: Path, epie_times, epie_scores, network, network_scores, truth, mask,
                 epie_image) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = np.nonzero(mask)
    box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    images = [("ground truth", truth), ("ePIE, last iteration", epie_image)]
    if network is not None:
        images.append(("network mosaic", network["image"]))
    figure = plt.figure(figsize=(4 * len(images), 11))
    grid = figure.add_gridspec(3, len(images), height_ratios=(1.1, 1, 1))
    plot = figure.add_subplot(grid[0, :])
    for name, color in (("amplitude", "C0"), ("phase", "C1")):
        for suffix, metric, line, star in (("", "SSIM", "o-", "*"),
                                           ("_correlation", "correlation", "s--", "P")):
            plot.plot(epie_times, [s[name + suffix] for s in epie_scores], line, ms=3,
                      color=color, label=f"ePIE {name} {metric}")
            if network_scores is not None:
                plot.plot(network["total_s"], network_scores[name + suffix], star, ms=14,
                          color=color, label=f"network {name} {metric}")
    plot.set_xscale("log")
    plot.set_xlabel("wall time for the whole scan (s)")
    plot.set_ylabel("score vs ground truth")
    plot.grid(alpha=0.3)
    plot.legend(fontsize=8, ncol=2)
    for column, (title, image) in enumerate(images):
        if image is not truth:  # same global phase as the truth
            image = image * np.exp(-1j * np.angle(np.sum((image * np.conj(truth))[mask])))
        for row, (part, cmap, limits) in enumerate(((np.abs, "gray", (0, 1)),
                                                    (np.angle, "twilight", (-np.pi, np.pi)))):
            axis = figure.add_subplot(grid[row + 1, column])
            axis.imshow(np.where(mask, part(image), np.nan)[box], cmap=cmap, vmin=limits[0],
                        vmax=limits[1])
            axis.set_title(f"{title}: {'amplitude' if row == 0 else 'phase'}")
            axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=400, help="scan points (Fermat spiral)")
    parser.add_argument("--iterations", type=int, default=100, help="ePIE iterations")
    parser.add_argument("--batch", type=int, default=20, help="ePIE minibatch (positions)")
    parser.add_argument("--alpha", type=float, default=1.0, help="ePIE update weight")
    parser.add_argument("--probe-update", action="store_true",
                        help="let ePIE refine the probe as well (it starts from the true one)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both methods (0: each runtime's default, every core)")
    parser.add_argument("--model", default="ptychonn-default", help="the network's model name")
    parser.add_argument("--backend", default="onnxruntime",
                        help="the network's backend (default %(default)s, as in the pipeline)")
    parser.add_argument("--precision", default="fp32", help="the network's precision")
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-ptychi",
                        help="virtual environment for ptychi (default %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "benchmark-logs" / "iterative",
                        help="scan, ePIE snapshots and the PNG (default %(default)s)")
    parser.add_argument("--skip-install", action="store_true",
                        help="use --venv as it is, without checking or installing")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    python = ensure_venv(args.venv, args.skip_install)
    print(f"simulating {args.points} frames of {DETECTOR}x{DETECTOR}", flush=True)
    simulator, positions, frames, positions_px, truth, mask = simulate(args.points)
    scan = args.work_dir / "scan.npz"
    np.savez(scan, frames=frames, positions_px=positions_px, probe=simulator.probe[0],
             photons=PHOTONS, pixel_size=simulator.pixel_size, object_shape=truth.shape,
             truth=truth, mask=mask)

    epie = run_epie(python, scan, args.work_dir / "epie.npz", args)
    seconds, kept = epie["seconds"], epie["snapshot_iterations"]
    epie_scores = [region_scores(image, truth, mask) for image in epie["snapshots"]]
    network = run_network(frames, positions, truth.shape, args.threads, args.model,
                          args.backend, args.precision)
    network_scores = None if network is None else region_scores(network["image"], truth, mask)

    n = len(frames)
    print(f"\nePIE (ptychi {'refined' if args.probe_update else 'fixed'} probe, batch "
          f"{int(epie['batch'])}, {int(epie['threads'])} threads): "
          f"{1e3 * seconds[-1] / len(seconds) / n:.3f} ms per frame and iteration (median "
          f"{1e3 * np.median(np.diff(seconds, prepend=0.0)) / n:.3f}), "
          f"setup {float(epie['setup_seconds']):.2f} s")
    print(f"{'iteration':>9} {'time (s)':>9} {'ms/frame':>9} {'SSIM amp':>9} {'SSIM phase':>10}"
          f" {'corr amp':>9} {'corr phase':>10}")
    for iteration, score in zip(kept, epie_scores, strict=True):
        total = seconds[iteration - 1]
        print(f"{iteration:9d} {total:9.2f} {1e3 * total / n:9.2f} {score['amplitude']:9.3f} "
              f"{score['phase']:10.3f} {score['amplitude_correlation']:9.3f} "
              f"{score['phase_correlation']:10.3f}")
    if network is None:
        print("network: not measured (see the note above); run again once the model and "
              "backends are in place")
    else:
        print(f"network ({args.backend} {args.precision}, batch {BATCH}): "
              f"{1e3 * network['inference_s'] / n:.3f} ms per frame inference + "
              f"{1e3 * network['stitch_s'] / n:.3f} ms stitching = "
              f"{1e3 * network['total_s'] / n:.3f} ms; SSIM amp "
              f"{network_scores['amplitude']:.3f} phase {network_scores['phase']:.3f}; "
              f"corr amp {network_scores['amplitude_correlation']:.3f} phase "
              f"{network_scores['phase_correlation']:.3f}")
        for metric, suffix in (("SSIM", ""), ("correlation", "_correlation")):
            for label, names in (("amplitude", ("amplitude",)), ("phase", ("phase",)),
                                 ("amplitude and phase", ("amplitude", "phase"))):
                # ePIE reaches the network's quality where every named score is as good
                margin = np.min([[s[name + suffix] - network_scores[name + suffix]
                                  for name in names] for s in epie_scores], axis=1)
                report_reach(f"{label} {metric}", first_reaching(seconds, kept, margin, 0.0),
                             seconds, n, network["total_s"])
        print(f"  latency to a first image: the network {network['first_batch_s']:.3f} s "
              f"after the first {min(BATCH, n)} frames; ePIE only after the whole scan of {n} "
              f"frames plus {seconds[0]:.2f} s for one iteration")
    print("ePIE needs every frame of the scan before it shows anything; the network "
          "answers frame by frame. Field's claim: > 100x faster at useful quality.")
    picture = args.work_dir / "iterative.png"
    save_picture(picture, seconds[kept - 1], epie_scores, network, network_scores, truth, mask,
                 epie["snapshots"][-1])
    print(f"picture: {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
