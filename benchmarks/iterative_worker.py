"""ePIE (ptychi) on a saved scan; runs inside the ptychi virtual environment.

Started by `benchmarks/iterative.py`, which wrote the scan: `frames` (n, N, N)
counts with the direct beam in the centre, `positions_px` (n, 2) (y, x) in
object pixels relative to the object's centre, `probe` (N, N) of unit power,
`photons` per frame and `object_shape`. Iteration by iteration it records the
wall time and snapshots of the object estimate, and writes them to an .npz:
`seconds` (cumulative reconstruction time after each iteration), `setup_seconds`,
`snapshot_iterations` and `snapshots` (k, h, w) complex64.

Imports only numpy, torch and ptychi: the project's own environment cannot
import ptychi beside its torch build (see DESIGN.md, "The iterative reference").
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import ptychi.api as api
import torch
from ptychi.api.task import PtychographyTask


def snapshot_schedule(iterations: int, every: int) -> set[int]:
    """Iterations (1-based) whose object is kept: the first ten, every `every`-th, the last."""
    return {k for k in range(1, iterations + 1) if k <= 10 or k % every == 0 or k == iterations}


def build_task(scan: dict, batch: int, alpha: float, probe_update: bool) -> PtychographyTask:
    frames = scan["frames"].astype(np.float32)
    size = frames.shape[-1]
    # ptychi's far-field propagator is an unnormalised FFT with the zero frequency at the
    # corner; the simulator's is orthonormal and centred. Rescale the probe so the
    # predicted counts match the measured ones and move the direct beam to the corner.
    probe = scan["probe"] * np.sqrt(float(scan["photons"])) / size
    options = api.EPIEOptions()
    options.data_options.fft_shift = False
    options.object_options.pixel_size_m = float(scan["pixel_size"])
    options.object_options.alpha = alpha
    options.object_options.step_size = 1.0
    # The probe is known exactly here, so there is no object/probe scale to settle.
    options.object_options.remove_object_probe_ambiguity.enabled = False
    options.probe_options.optimizable = probe_update
    options.probe_options.alpha = alpha
    options.probe_options.orthogonalize_incoherent_modes.enabled = False
    options.reconstructor_options.batch_size = batch
    options.reconstructor_options.num_epochs = 1
    options.reconstructor_options.default_device = api.Devices.CPU
    options.reconstructor_options.random_seed = 0
    options.reconstructor_options.displayed_loss_function = None
    positions = scan["positions_px"].astype(np.float32)
    return PtychographyTask(
        options,
        diffraction_data=np.fft.ifftshift(frames, axes=(-2, -1)),
        object_data=np.ones((1, *scan["object_shape"]), np.complex64),
        probe_data=probe.astype(np.complex64)[None, None],
        probe_position_y_px=positions[:, 0],
        probe_position_x_px=positions[:, 1],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", type=Path, help=".npz written by benchmarks/iterative.py")
    parser.add_argument("out", type=Path, help=".npz to write")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20, help="ePIE minibatch (positions)")
    parser.add_argument("--alpha", type=float, default=1.0, help="ePIE update weight")
    parser.add_argument("--probe-update", action="store_true", help="refine the probe too")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--snapshot-every", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ptychi").setLevel(logging.WARNING)
    # ptychi reads a scalar off a tensor that requires grad; harmless, and noisy.
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    if args.threads:
        torch.set_num_threads(args.threads)

    with np.load(args.scan) as data:
        scan = {name: data[name] for name in data.files}
    frames = len(scan["frames"])
    started = time.perf_counter()
    task = build_task(scan, args.batch, args.alpha, args.probe_update)
    setup = time.perf_counter() - started
    height, width = (int(v) for v in scan["object_shape"])
    print(f"ePIE: {frames} frames, object {height}x{width}, batch {args.batch}, "
          f"alpha {args.alpha}, probe {'refined' if args.probe_update else 'fixed'}, "
          f"{torch.get_num_threads()} threads; setup {setup:.2f} s", flush=True)

    keep = snapshot_schedule(args.iterations, args.snapshot_every)
    seconds, kept, snapshots = [], [], []
    elapsed = 0.0
    with task:
        for iteration in range(1, args.iterations + 1):
            started = time.perf_counter()
            task.run(1)
            elapsed += time.perf_counter() - started
            seconds.append(elapsed)
            if iteration in keep:  # copying out is not part of the reconstruction's time
                kept.append(iteration)
                snapshots.append(task.get_data_to_cpu("object", as_numpy=True)[0].copy())
            print(f"  iteration {iteration:4d}/{args.iterations}: {elapsed:7.2f} s, "
                  f"{1e3 * elapsed / iteration / frames:.3f} ms per frame and iteration",
                  flush=True)
    np.savez(args.out, seconds=np.array(seconds), setup_seconds=setup,
             snapshot_iterations=np.array(kept), snapshots=np.stack(snapshots).astype(np.complex64),
             batch=args.batch, alpha=args.alpha, probe_update=args.probe_update,
             threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
