"""A stitched reconstruction against a reference object (ground truth or an iterative
reconstruction), on the same canvas, aligned, scored amplitude and phase apart.

The reference is averaged down to the reconstruction's pixel (an integer number of its
own pixels), placed so that scan position 0 falls on its `origin` pixel (its centre
pixel, shape // 2, when not given), then shifted by the whole pixels that best match
and its phase offset removed: a diffraction pattern cannot tell a constant phase.
"""

from __future__ import annotations

import numpy as np

from ptychoedge.inference.mosaic import Mosaic
from ptychoedge.inference.scores import CHANNELS, scored

SEARCH = 6  # pixels the alignment may shift the reference, each way


class ComparisonError(ValueError):
    """A reference that cannot be compared, with the reason."""


def coarsening(fine: float, coarse: float) -> int | None:
    """How many pixels of size `fine` make one of size `coarse`; None if not a whole number."""
    ratio = coarse / fine
    factor = int(round(ratio))
    return factor if factor >= 1 and abs(ratio - factor) <= 0.01 * ratio else None


def coarsened(image: np.ndarray, factor: int) -> np.ndarray:
    """`image` averaged over blocks of factor x factor pixels (a partial edge block dropped)."""
    height, width = (np.array(image.shape) // factor) * factor
    return image[:height, :width].reshape(height // factor, factor, width // factor,
                                          factor).mean(axis=(1, 3))


def on_canvas(shape: tuple[int, int], zero: tuple[int, int], canvas_pixel: float,
              reference: np.ndarray, pixel: float,
              origin: tuple[float, float] | None = None) -> np.ndarray:
    """The complex reference at `canvas_pixel` on a canvas of `shape` whose pixel `zero`
    (x, y) is scan position 0 (0 where the reference has nothing)."""
    factor = coarsening(pixel, canvas_pixel)
    if factor is None:
        raise ComparisonError(f"the reference's pixel {pixel * 1e9:.2f} nm does not divide the "
                              f"reconstruction's {canvas_pixel * 1e9:.2f} nm")
    coarse = coarsened(reference, factor)
    ox, oy = origin if origin is not None else (reference.shape[1] // 2, reference.shape[0] // 2)
    canvas = np.zeros(shape, np.complex64)
    dx, dy = zero[0] - int(round(ox / factor)), zero[1] - int(round(oy / factor))
    ch, cw = coarse.shape
    y0, y1 = max(dy, 0), min(dy + ch, shape[0])
    x0, x1 = max(dx, 0), min(dx + cw, shape[1])
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = coarse[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return canvas


def aligned(reference: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray
            ) -> tuple[np.ndarray, tuple[int, int]]:
    """The reference shifted (whole pixels, up to SEARCH) to best match the reconstruction
    over `mask`, with its phase offset to it removed; and the shift (x, y)."""
    best, best_shift = -1.0, (0, 0)
    for dy in range(-SEARCH, SEARCH + 1):
        for dx in range(-SEARCH, SEARCH + 1):
            shifted = np.roll(reference, (dy, dx), axis=(0, 1))
            a, b = shifted[mask], reconstruction[mask]
            match = abs(np.vdot(a - a.mean(), b - b.mean())) / (
                np.linalg.norm(a - a.mean()) * np.linalg.norm(b - b.mean()) + 1e-30)
            if match > best:
                best, best_shift = match, (dx, dy)
    shifted = np.roll(reference, best_shift[::-1], axis=(0, 1))
    offset = np.angle(np.vdot(shifted[mask], reconstruction[mask]))
    return shifted * np.exp(1j * offset), best_shift


def compare(mosaic: Mosaic, reference: np.ndarray, pixel: float,
            origin: tuple[float, float] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Scores of the mosaic against the reference over the well-lit region (with a flat
    image's beside them), and the aligned reference on the mosaic's canvas."""
    return compare_images(*mosaic.images(), mosaic.coverage(), mosaic.pixel_size,
                          mosaic.position_to_pixel(0.0, 0.0), reference, pixel, origin)


def compare_images(amplitude: np.ndarray, phase: np.ndarray, mask: np.ndarray,
                   canvas_pixel: float, zero: tuple[int, int], reference: np.ndarray,
                   pixel: float, origin: tuple[float, float] | None = None
                   ) -> tuple[dict[str, float], np.ndarray]:
    """`compare` for any reconstruction on a canvas: its pixel, and the pixel `zero` (x, y)
    of scan position 0; scored where `mask` is true."""
    reconstruction = amplitude * np.exp(1j * phase)
    canvas = on_canvas(amplitude.shape, zero, canvas_pixel, reference, pixel, origin)
    mask = mask & (np.abs(canvas) > 0)
    if mask.sum() < 16:
        raise ComparisonError("the reference does not overlap the scanned region")
    canvas, shift = aligned(canvas, reconstruction, mask)
    rows, cols = np.nonzero(mask)
    window = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    result: dict[str, float] = {"shift_x": shift[0], "shift_y": shift[1]}
    for name, index, data_range in CHANNELS:
        got = (amplitude, phase)[index][window]
        want = (np.abs(canvas), np.angle(canvas))[index][window]
        result |= scored(got, want, data_range, name, mask[window])
    return result, canvas
