"""Stitching reconstructed patches into one image of the sample.

Each patch is placed at its scan position and blended with the probe's
intensity as weight, so the well-lit centre of a patch counts most. Phase is
blended as a direction (the angle of the weighted sum of amplitude x exp(i phase)),
so a phase that wraps at +-pi stitches without seams. The canvas grows as the scan
goes; 0 marks where no patch has reached yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GROW_MARGIN = 128  # px added around the canvas when a patch falls outside it


class Mosaic:
    def __init__(self, pixel_size: float, weight: np.ndarray):
        self.pixel_size = pixel_size
        self.weight = weight.astype(np.float64)
        self.size = weight.shape[0]
        self.reset()

    def reset(self) -> None:
        self.origin = np.array([0, 0])  # canvas pixel (x, y) of position 0
        # weighted amplitude, its real and imaginary parts with the phase, weight
        self._sums = np.zeros((4, 0, 0))
        self.patches = 0

    def add(self, amplitude: np.ndarray, phase: np.ndarray, x: float, y: float) -> None:
        """Blend one patch centred at scan position (x, y) metres."""
        centre = np.rint(np.array([x, y]) / self.pixel_size).astype(int)
        left, top = centre + self.origin - self.size // 2
        left, top = self._fit(left, top)
        window = self._sums[:, top:top + self.size, left:left + self.size]
        weighted = self.weight * amplitude
        window[0] += weighted
        window[1] += weighted * np.cos(phase)
        window[2] += weighted * np.sin(phase)
        window[3] += self.weight
        self.patches += 1

    def _fit(self, left: int, top: int) -> tuple[int, int]:
        """Grow the canvas so a patch at (left, top) fits; its corner in the new canvas."""
        _, height, width = self._sums.shape
        pad_left = -left + GROW_MARGIN if left < 0 else 0
        pad_top = -top + GROW_MARGIN if top < 0 else 0
        right, bottom = left + self.size - width, top + self.size - height
        pad_right = right + GROW_MARGIN if right > 0 else 0
        pad_bottom = bottom + GROW_MARGIN if bottom > 0 else 0
        if pad_left or pad_top or pad_right or pad_bottom:
            self._sums = np.pad(self._sums, ((0, 0), (pad_top, pad_bottom),
                                             (pad_left, pad_right)))
            self.origin = self.origin + [pad_left, pad_top]
        return left + pad_left, top + pad_top

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """Amplitude and phase (float32), 0 where nothing was placed."""
        weighted_amplitude, real, imaginary, weight = self._sums
        covered = weight > 1e-6 * self.weight.max()
        safe = np.where(covered, weight, 1.0)
        amplitude = np.where(covered, weighted_amplitude / safe, 0.0)
        phase = np.where(covered, np.arctan2(imaginary, real), 0.0)
        return amplitude.astype(np.float32), phase.astype(np.float32)

    def coverage(self) -> np.ndarray:
        """True where the summed blend weight is at least half the probe's mean: well measured.

        The mean, not the peak: a defocused probe is a ring, dark in its centre.
        """
        return self._sums[3] >= 0.5 * self.weight.mean()

    def position_to_pixel(self, x: float, y: float) -> tuple[int, int]:
        """Canvas pixel (column, row) of scan position (x, y) metres."""
        column, row = np.rint(np.array([x, y]) / self.pixel_size).astype(int) + self.origin
        return int(column), int(row)

    def save(self, path: Path) -> None:
        """The canvas, to go on stitching elsewhere (`load`): a scan redrawn with a new model."""
        np.savez(path, sums=self._sums, origin=self.origin, patches=self.patches,
                 pixel_size=self.pixel_size, weight=self.weight)

    @classmethod
    def load(cls, path: Path) -> Mosaic:
        with np.load(path, allow_pickle=False) as saved:
            mosaic = cls(float(saved["pixel_size"]), saved["weight"])
            mosaic._sums, mosaic.origin = saved["sums"], saved["origin"]
            mosaic.patches = int(saved["patches"])
        return mosaic
