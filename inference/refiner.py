"""The refiner: a scan the frame ring wrote, drawn by the network, then refined live.

    python -m ptychoedge.inference.refiner --scan SCAN.cxi --model NAME --seconds 20 \
        --images EDGE1:refiner: --out REFINED.cxi

The pipeline IOC starts it at the `Refine` button (iocs/refinement.py). It serves
`<images>Refined:Amplitude` and `<images>Refined:Phase` (NTNDArray float32, at the
instrument's object pixel; the IOC's image relay passes them on as `$(P)Refined:*`):
first the network's mosaic of the scan, then the refinement through the physics
(refine.py, with the instrument in the scan file, its probe refined too) once a second
until `--seconds` have passed. Their attributes say where they lie: `PixelSize` (m) and
`OriginX`, `OriginY` (the pixel of scan position 0). At the end it writes `--out`: the
refined object and the instrument with the refined probe (reconstruct.py's
`refined.cxi`). The even and the odd frames are then refined apart, a third of
`--seconds` each (resolution.py), and the amplitude is served filtered to what the two
agree on. Each sweep prints a progress line (`PROGRESS`, its time out of the whole); the
last line is JSON: frames, sweeps, seconds, the Fourier error after the first and the last
sweep, how far the probe moved, the half-periods resolved. It then keeps serving the last
image until it is stopped. A scan or model
it cannot use: one line `error: ...` and exit code 2. pvapy, so a process of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pvaccess as pva

from ptychoedge.inference.backends import BackendError, open_model
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.instrument import InstrumentError
from ptychoedge.inference.manifest import MODEL_DIR, ModelError
from ptychoedge.inference.mosaic_processor import image_frame
from ptychoedge.inference.preprocess import FrameError
from ptychoedge.inference.reconstruct import reconstruct, write_object
from ptychoedge.inference.refine import (
    PROBE_FROM,
    Refinement,
    network_start,
    probe_overlap,
    refine,
    scan_instrument,
)
from ptychoedge.inference.resolution import (
    FEWEST_FRAMES,
    HALVES_SHARE,
    half_scans,
    with_half_scans,
)
from ptychoedge.inference.scan_file import ScanFileError, load_scan
from ptychoedge.pvdb.pipeline import REFINED_IMAGES

log = logging.getLogger("ptychoedge.refiner")

PROGRESS = "refining: sweep {sweeps}, Fourier error {error:.5f}, {spent:.1f} of {seconds:.1f} s"
SHOW_EVERY = 1.0  # s between the images it serves while refining


class RefinedImages:
    """The two images, served under a prefix and numbered as they change."""

    def __init__(self, prefix: str):
        self.names = [prefix + image for image in REFINED_IMAGES]
        self.server = pva.PvaServer()
        for name in self.names:
            self.server.addRecord(name, pva.NtNdArray())
        self.shown = 0

    def show(self, amplitude: np.ndarray, phase: np.ndarray, pixel: float,
             origin: tuple[int, int]) -> None:
        self.shown += 1
        where = {"PixelSize": (pixel, "Object pixel size (m)"),
                 "OriginX": (origin[0], "Column of scan position 0"),
                 "OriginY": (origin[1], "Row of scan position 0")}
        for name, image in zip(self.names, (amplitude, phase), strict=True):
            self.server.update(name, image_frame(image, self.shown, where))

    def close(self) -> None:
        self.server.stop()


def run(args: argparse.Namespace, images: RefinedImages) -> dict:
    """Draw the scan with the network, then refine it; the summary."""
    frames, positions = load_scan(args.scan)
    backend, manifest = open_model("onnxruntime", "fp32", args.model, args.model_dir, threads=1)
    instrument = scan_instrument(args.scan, manifest)
    drawn = reconstruct(frames, positions, Reconstructor(backend, manifest))
    taken = np.isfinite(drawn.residuals)
    if not taken.any():
        raise FrameError("model", f"the model {args.model} took none of the {len(frames)} frames")
    mosaic = drawn.mosaic
    images.show(*mosaic.images(), mosaic.pixel_size, mosaic.position_to_pixel(0.0, 0.0))
    last_shown = time.monotonic()
    whole = with_half_scans(args.seconds)

    def refining(refinement: Refinement) -> None:
        nonlocal last_shown
        print(PROGRESS.format(sweeps=refinement.sweeps, error=refinement.errors[-1],
                              spent=refinement.seconds, seconds=whole), flush=True)
        if time.monotonic() - last_shown >= SHOW_EVERY:
            images.show(*refinement.images(), refinement.pixel_size, refinement.origin)
            last_shown = time.monotonic()

    halves: list[Refinement] = []

    def resolving(half: Refinement) -> None:
        if not halves or halves[-1] is not half:
            halves.append(half)
        spent = refinement.seconds + sum(done.seconds for done in halves)
        print(PROGRESS.format(sweeps=refinement.sweeps, error=refinement.errors[-1],
                              spent=spent, seconds=whole), flush=True)

    start, why = network_start(mosaic, drawn.residuals, manifest)
    orientation = manifest.preprocessing.orientation
    refinement = refine(frames[taken], positions[taken], instrument, orientation,
                        args.seconds, start, refining, probe_from=PROBE_FROM)
    amplitude, phase = refinement.images()
    images.show(amplitude, phase, refinement.pixel_size, refinement.origin)
    write_object(args.out, amplitude, phase, refinement.pixel_size, refinement.origin,
                 replace(instrument, probe=refinement.probe))
    summary = {"frames": int(taken.sum()), "refused": int((~taken).sum()),
               "sweeps": refinement.sweeps, "seconds": round(refinement.seconds, 2),
               "started_from": refinement.started_from, "why": why,
               "fourier_error": [refinement.errors[0], refinement.errors[-1]],
               "probe_overlap_with_given": probe_overlap(refinement.probe, instrument.probe),
               "written": str(args.out)}
    if taken.sum() >= FEWEST_FRAMES:
        resolution = half_scans(frames[taken], positions[taken], instrument, orientation,
                                refinement, args.seconds * HALVES_SHARE, resolving)
        images.show(resolution.filtered_amplitude(np.abs(refinement.obj), refinement.lit),
                     phase, refinement.pixel_size, refinement.origin)
        summary |= resolution.figures()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge-refiner", description=__doc__.split("\n")[0])
    parser.add_argument("--scan", type=Path, required=True, help="the scan (CXI) to refine")
    parser.add_argument("--model", required=True, help="the model that draws it first")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to refine")
    parser.add_argument("--images", required=True, help="prefix of the images it serves")
    parser.add_argument("--out", type=Path, required=True,
                        help="the CXI file it writes: the refined object and instrument")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s refiner %(message)s")
    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    images = RefinedImages(args.images)
    try:
        summary = run(args, images)
    except (ScanFileError, ModelError, BackendError, InstrumentError, FrameError,
            OSError) as error:
        print(f"error: {error}", flush=True)
        images.close()
        return 2
    print(json.dumps(summary), flush=True)
    quit_event.wait()
    images.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
