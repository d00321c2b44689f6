"""Scan patterns: the positions of a raster or a Fermat-spiral scan.

The detector's own scans (the simulator), the Bluesky scan plans and the
offline tools all lay out their points here.
"""

from __future__ import annotations

import numpy as np

GOLDEN_ANGLE = np.deg2rad(137.50776405)
# Spiral radius r = FERMAT_SCALE * step * sqrt(k): with this scale the median
# nearest-neighbour distance of the golden-angle spiral equals `step`.
FERMAT_SCALE = 0.592


def raster_positions(n_x: int, n_y: int, step: float) -> np.ndarray:
    """(n_x*n_y, 2) grid positions (x, y) in the unit of `step`, centred on 0.

    Row by row, x fastest, every row left to right (not serpentine).
    """
    if n_x < 1 or n_y < 1:
        raise ValueError(f"raster needs n_x >= 1 and n_y >= 1, got {n_x} x {n_y}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    x = (np.arange(n_x) - (n_x - 1) / 2) * step
    y = (np.arange(n_y) - (n_y - 1) / 2) * step
    return np.column_stack([np.tile(x, n_y), np.repeat(y, n_x)])


def fermat_spiral_positions(n_points: int, step: float) -> np.ndarray:
    """(n_points, 2) positions (x, y), in the unit of `step`, on a golden-angle Fermat spiral.

    Point k sits at radius FERMAT_SCALE * step * sqrt(k), angle k * 137.508 deg, so
    neighbours are about `step` apart; the pattern is shifted to mean 0.
    """
    if n_points < 1:
        raise ValueError(f"spiral needs at least one point, got {n_points}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    k = np.arange(n_points)
    radius = FERMAT_SCALE * step * np.sqrt(k)
    angle = k * GOLDEN_ANGLE
    positions = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    return positions - positions.mean(axis=0)
