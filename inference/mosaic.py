"""Stitching reconstructed patches into one image of the sample.

Each patch is placed at its scan position and blended with the probe's
intensity as weight, so the well-lit centre of a patch counts most. Phase is
blended as a direction (the angle of the weighted sum of amplitude x exp(i phase)),
so a phase that wraps at +-pi stitches without seams. The canvas grows as the scan
goes; 0 marks where no patch has reached yet.

A model trained through the physics alone knows each patch's phase only up to a constant
(no label fixes it, and a frame's diffraction does not): its mosaic turns each patch, before
blending it in, by the constant phase that fits the patches before it best (`align_phase`),
where that is more than the network's own error (`TURN_ABOVE`).

Neighbouring patches show the same object pixels, so a true reconstruction's patches agree
where they overlap. Each patch's phase is compared, before it is blended in, with what the
patches before it made of the pixels they lit (`Overlap`); `agreement` pools that over
many patches. Patches that are not this sample (a network that cannot read it, one
answer for every frame), or positions out of step with the frames, disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from ptychoedge.inference.manifest import Manifest

GROW_MARGIN = 128  # px added around the canvas when a patch falls outside it
# a pixel is compared once the patches before it lit it with this share of the probe's peak
COVERED = 1e-3
# every STRIDE-th pixel of each row and column is compared: a network's images are smooth at
# the pixel scale, so a quarter of the pixels say as much, at a quarter of the cost
STRIDE = 2
# patches whose phase varies by less than this (rms, rad) have nothing to agree on
STILL = 1e-4
# rad: a patch known up to a constant phase is turned by the constant between it and the
# mosaic before it only above this. Smaller ones are mostly the network's own error, and
# turning by them lets it add up from patch to patch over a scan (a fresh network's
# labyrinth: stitched phase correlation 0.68 turned by none, 0.60 by every one; MODELS.md)
TURN_ABOVE = 0.2


class Overlap(NamedTuple):
    """One patch's phase against the mosaic's before it, over the pixels that mosaic
    covered, as unit phasors (so a phase that wraps compares as it should): the weighted
    squared difference, at the constant phase between them that fits best (a frame's
    diffraction says nothing of its patch's mean phase), and the patch's own weighted
    variation about its mean there. The phase, not the amplitude: a weak absorber's
    amplitude is mostly noise in a true image. A pixel weighs w W / (w + W), w the patch's
    probe intensity there and W the mosaic's summed weight: each side's noise goes as one
    over its weight, so a pixel either side barely lit counts little."""

    disagreement: float
    variation: float
    weight: float  # the pixels' summed weight


def agreement(overlaps: Iterable[Overlap]) -> float:
    """1 - the summed disagreement over the summed variation: 1 when every patch says what
    the patches before it said, 0 when no better than its own mean would, below 0 worse;
    NaN where no patch overlapped an earlier one, or none varied."""
    disagreement = variation = weight = 0.0
    for overlap in overlaps:
        disagreement += overlap.disagreement
        variation += overlap.variation
        weight += overlap.weight
    return 1.0 - disagreement / variation if variation > STILL**2 * weight else float("nan")


class Mosaic:
    def __init__(self, pixel_size: float, weight: np.ndarray, align_phase: bool = False):
        self.pixel_size = pixel_size
        self.weight = weight.astype(np.float64)
        self.align_phase = align_phase
        self._peak = float(self.weight.max())
        self.size = weight.shape[0]
        self.reset()

    @classmethod
    def for_model(cls, manifest: Manifest) -> Mosaic:
        """The mosaic of a model's patches: its object pixel, its probe's intensity as weight,
        each patch's constant phase aligned where the model knows it only up to one."""
        return cls(manifest.object_pixel_size, manifest.illumination(),
                   manifest.phase_up_to_a_constant)

    def reset(self) -> None:
        self.origin = np.array([0, 0])  # canvas pixel (x, y) of position 0
        # weighted amplitude, its real and imaginary parts with the phase, weight
        self._sums = np.zeros((4, 0, 0))
        self.patches = 0

    def add(self, amplitude: np.ndarray, phase: np.ndarray, x: float, y: float
            ) -> Overlap | None:
        """Blend one patch centred at scan position (x, y) metres; how it compared with the
        mosaic before it (None where that covered none of its pixels)."""
        centre = np.rint(np.array([x, y]) / self.pixel_size).astype(int)
        left, top = centre + self.origin - self.size // 2
        left, top = self._fit(left, top)
        window = self._sums[:, top:top + self.size, left:left + self.size]
        cos, sin = np.cos(phase), np.sin(phase)
        every = (slice(None, None, STRIDE),) * 2
        overlap, offset = self._overlap(cos[every], sin[every], window[(slice(None), *every)],
                                        self.weight[every])
        if self.align_phase and abs(offset) > TURN_ABOVE:
            turn_cos, turn_sin = np.cos(offset), np.sin(offset)  # turned by -offset
            cos, sin = cos * turn_cos + sin * turn_sin, sin * turn_cos - cos * turn_sin
        weighted = self.weight * amplitude
        window[0] += weighted
        window[1] += weighted * cos
        window[2] += weighted * sin
        window[3] += self.weight
        self.patches += 1
        return overlap

    def _overlap(self, cos: np.ndarray, sin: np.ndarray, window: np.ndarray,
                 mine: np.ndarray) -> tuple[Overlap | None, float]:
        """The patch's phase (`cos`, `sin`; probe intensity `mine`) against the mosaic's
        at the same pixels (the angle of its sums in `window`), and the constant phase of the
        patch over the mosaic's there (0 where the mosaic covered none of them)."""
        earlier = window[3]
        modulus = np.hypot(window[1], window[2])
        covered = (earlier > COVERED * self._peak) & (modulus > 0)
        if not covered.any():
            return None, 0.0
        weight = (covered * mine * earlier / (mine + earlier + 1e-300)).ravel()
        safe = np.where(covered, modulus, 1.0)
        before_cos, before_sin = (window[1] / safe).ravel(), (window[2] / safe).ravel()
        cos, sin = cos.ravel(), sin.ravel()
        total = weight.sum()
        # unit phasors: the least disagreement over a constant phase between the two (which
        # no frame's diffraction fixes) is 2 (sum w - |sum w exp(i (phase - phase before))|)
        real = weight @ (cos * before_cos + sin * before_sin)
        imaginary = weight @ (sin * before_cos - cos * before_sin)
        cross = np.hypot(real, imaginary)
        # the variation about the weighted mean: sum w - |sum w exp(i phase)|^2 / sum w
        variation = total - (np.square(weight @ cos) + np.square(weight @ sin)) / total
        return (Overlap(float(2 * (total - cross)), float(variation), float(total)),
                float(np.arctan2(imaginary, real)))

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
                 pixel_size=self.pixel_size, weight=self.weight, align_phase=self.align_phase)

    @classmethod
    def load(cls, path: Path) -> Mosaic:
        with np.load(path, allow_pickle=False) as saved:
            mosaic = cls(float(saved["pixel_size"]), saved["weight"], bool(saved["align_phase"]))
            mosaic._sums, mosaic.origin = saved["sums"], saved["origin"]
            mosaic.patches = int(saved["patches"])
        return mosaic
