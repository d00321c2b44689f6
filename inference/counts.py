"""Frames as photon counts, the unit the physics and the networks read.

Integer pixels are counts as they are. Floating-point ones come from processing (a
recorded file with its dark subtracted, an areaDetector NDProcess stream, gaps as NaN):
they are rounded to whole counts, a value below 0 read as 0 and a non-finite one as -1, no
count, as a detector's gap reads. Floats that are mostly fractions of a count are in other
units and refused: rounding them would lose the signal.
"""

from __future__ import annotations

import numpy as np


class NotCounts(ValueError):
    """Pixels that are not photon counts, with the reason."""


def as_counts(frames: np.ndarray) -> np.ndarray:
    """Integer frames as they are; floating-point ones as int32 counts."""
    if np.issubdtype(frames.dtype, np.integer):
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise NotCounts(f"pixels must be photon counts, got {frames.dtype}")
    finite = np.isfinite(frames)
    values = np.maximum(np.where(finite, frames, 0.0), 0.0)
    counts = np.rint(values)
    signal = float(values.sum(dtype=np.float64))
    if signal > 0 and float(counts.sum(dtype=np.float64)) < 0.5 * signal:
        raise NotCounts(f"the {frames.dtype} pixels are mostly fractions of a count (at most "
                        f"{values.max():.3g}): in other units than photons? Scale them to "
                        "photon counts (divide by the detector's gain)")
    if counts.max(initial=0.0) > np.iinfo(np.int32).max:
        raise NotCounts(f"pixels of up to {counts.max():.3g} counts do not fit 32-bit integers")
    return np.where(finite, counts, -1).astype(np.int32)
