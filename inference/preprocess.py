"""From a detector frame to the network's input, and from the truth to its target.

The same steps in training and at the edge: orient the frame (see instrument.py),
take the `crop_size` pixels around the direct beam, bin them down to the model's
`input_size`, then log1p and a fixed scale.

What the network sees of the object follows from the forward model: cropping the
detector to C of its N pixels keeps the field of view and makes the object pixel N/C
times coarser; binning by b keeps that object pixel and shrinks the field b times. So
the network's output is `input_size` object pixels of wavelength x distance /
(crop_size x detector pixel) each, and the probe over that field is the instrument's
probe Fourier-cropped to C, then cut to its central C / b pixels.

A detector's masked pixels (module gaps, dead or hot pixels: the instrument's mask)
measure nothing. They are guessed from the pixels around them and across the direct beam
(gap_fill.py); a binned pixel left with pixels that have no guess is scaled up by the
share it has, and one with none is 0. So the network sees a whole frame, while the
diffraction residual and the physics loss, which know which binned pixels were measured
whole (`measured`), leave the others out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np

from ptychoedge.inference.gap_fill import GapFill
from ptychoedge.inference.instrument import Orientation

# The direct beam's centroid may wander this fraction of the crop from where the
# instrument says it is: a frame further off belongs to another geometry.
BEAM_TOLERANCE = 0.25
MIN_INSIDE = 0.25  # the crop holds at least this fraction of a frame's counts


class FrameError(ValueError):
    """A frame the model cannot take; `kind` names the fault for the statistics."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Preprocessing:
    crop_size: int = 64
    input_size: int = 64
    scale: float = 0.1  # log1p(counts) x scale is about 0..1
    orientation: Orientation = field(default_factory=Orientation)
    # the instrument's mask, frames as they arrive (True: measures nothing); not in as_dict
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.orientation, dict):
            object.__setattr__(self, "orientation", Orientation(**self.orientation))
        if self.crop_size % self.input_size:
            raise ValueError(f"crop size {self.crop_size} must be a multiple of the input "
                             f"size {self.input_size}")

    @property
    def binning(self) -> int:
        return self.crop_size // self.input_size

    def as_dict(self) -> dict:
        return {"crop_size": self.crop_size, "input_size": self.input_size,
                "scale": self.scale, "orientation": asdict(self.orientation)}

    def canonical(self, frame_size: int) -> Preprocessing:
        """The same for frames already in the forward model's orientation with the beam at
        the centre of their `frame_size` pixels square (simulated ones). The detector's mask
        moves with its crop, so simulated frames reach the network with the instrument's
        gaps filled as the detector's are."""
        mask = None
        if self.mask is not None:
            mask = np.zeros((frame_size, frame_size), bool)
            top = frame_size // 2 - self.crop_size // 2
            mask[top:top + self.crop_size, top:top + self.crop_size] = ~self._masked.crop
        return Preprocessing(self.crop_size, self.input_size, self.scale, mask=mask)

    def measured(self) -> np.ndarray | None:
        """(input, input) bool: the binned pixels whose every detector pixel measures; None
        without a mask (all of them)."""
        return None if self.mask is None else self._masked.measured

    @cached_property
    def _masked(self) -> _Masked:
        kept = ~self.orientation.apply(self.mask[None])[0]
        crop = kept[self._crop(kept.shape)]
        fill = GapFill.for_pixels(crop)
        known = crop.copy()
        known.ravel()[fill.targets] = fill.guessed

        def binned_share(pixels: np.ndarray) -> np.ndarray:
            b = self.binning
            return pixels.reshape(self.input_size, b, self.input_size, b).mean(axis=(1, 3))
        return _Masked(kept, crop, fill, binned_share(known), binned_share(crop) == 1)

    def _crop(self, oriented_shape: tuple[int, int]) -> tuple[slice, slice]:
        """The rows and columns of an oriented frame that the crop around the beam takes."""
        x, y = self.orientation.beam(oriented_shape)
        top, left = y - self.crop_size // 2, x - self.crop_size // 2
        return slice(top, top + self.crop_size), slice(left, left + self.crop_size)

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, ny, nx) integer counts -> (n, 1, input, input) float32 network input."""
        return self.normalise(self.binned(frames))

    def binned(self, frames: np.ndarray, check_beam: bool = True) -> np.ndarray:
        """(n, ny, nx) or (ny, nx) integer counts -> (n, input, input) float32 counts."""
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3:
            raise FrameError("rank", f"expected a 2-D frame, got shape {frames.shape}")
        if 0 in frames.shape:
            raise FrameError("empty", f"empty frame, shape {frames.shape}")
        if not np.issubdtype(frames.dtype, np.integer):
            raise FrameError("pixel_type", f"expected integer counts, got {frames.dtype}")
        if self.mask is not None and frames.shape[1:] != self.mask.shape:
            raise FrameError("size", f"frame {frames.shape[2]}x{frames.shape[1]}: the model's "
                             f"detector mask is for {self.mask.shape[1]}x{self.mask.shape[0]}")
        frames = self.orientation.apply(frames)
        ny, nx = frames.shape[1:]
        if min(ny, nx) < self.crop_size:
            raise FrameError("too_small", f"frame {nx}x{ny} is smaller than the model's "
                             f"{self.crop_size}x{self.crop_size} crop")
        rows, columns = self._crop((ny, nx))
        if rows.start < 0 or columns.start < 0 or rows.stop > ny or columns.stop > nx:
            x, y = self.orientation.beam((ny, nx))
            raise FrameError("beam", f"a {self.crop_size}-pixel crop around the direct beam at "
                             f"({x}, {y}) does not fit the {nx}x{ny} frame")
        crop = frames[:, rows, columns].astype(np.float32, order="C")
        if np.issubdtype(frames.dtype, np.signedinteger):
            np.maximum(crop, 0.0, out=crop)  # below 0 is no count (a gap), never a NaN input
        if self.mask is not None:
            crop = self._masked.fill(crop)
        b = self.binning
        binned = crop.reshape(len(crop), self.input_size, b, self.input_size, b).sum(axis=(2, 4))
        if self.mask is not None:
            share = self._masked.share
            binned = np.where(share > 0, binned / np.maximum(share, 1e-6), 0.0).astype(np.float32)
        if check_beam:  # a masked pixel's value is no count
            _check_beam(binned, frames if self.mask is None else frames * self._masked.kept)
        return binned

    def normalise(self, binned: np.ndarray) -> np.ndarray:
        """(n, input, input) counts -> (n, 1, input, input) network input."""
        return (np.log1p(binned) * self.scale)[:, None].astype(np.float32)

    def targets(self, patches: np.ndarray) -> np.ndarray:
        """(n, N, N) complex object patches under an N-pixel window -> (n, 2, input, input)
        amplitude and phase at the network's object pixel, over its field."""
        return split(self.object_patches(patches))

    def object_patches(self, patches: np.ndarray) -> np.ndarray:
        """(n, N, N) complex patches at an N-pixel window's object pixel -> (n, input,
        input) complex at the network's: N / crop_size pixels averaged, the centre kept."""
        n = patches.shape[-1]
        if n % self.crop_size:
            raise ValueError(f"patches of {n} pixels cannot be averaged down to a "
                             f"{self.crop_size}-pixel crop's object pixel")
        factor = n // self.crop_size
        coarse = patches.reshape(len(patches), self.crop_size, factor, self.crop_size,
                                 factor).mean(axis=(2, 4))
        top = (self.crop_size - self.input_size) // 2
        return coarse[:, top:top + self.input_size, top:top + self.input_size]


class _Masked(NamedTuple):
    """What the instrument's mask makes of a frame, computed once."""

    kept: np.ndarray  # (ny, nx) oriented: the pixels that measure
    crop: np.ndarray  # (crop, crop) of them around the beam
    fill: GapFill  # guesses for the others in the crop
    share: np.ndarray  # (input, input) of each binned pixel's pixels, measured or guessed
    measured: np.ndarray  # (input, input) the binned pixels measured whole


def split(patches: np.ndarray) -> np.ndarray:
    """(n, s, s) complex -> (n, 2, s, s) float32 amplitude, phase."""
    return np.stack([np.abs(patches), np.angle(patches)], axis=1).astype(np.float32)


def _check_beam(binned: np.ndarray, frames: np.ndarray) -> None:
    """FrameError when a frame's direct beam is not where the instrument puts it: most of
    its counts outside the crop, or their centroid far from the crop's centre."""
    size = binned.shape[-1]
    totals = binned.sum(axis=(1, 2))
    outside = frames.sum(axis=(1, 2), dtype=np.float64) - totals
    if np.any(outside > (1 - MIN_INSIDE) * (outside + totals)):
        raise FrameError("beam", f"only {totals.min() / (outside + totals).max():.0%} of a "
                         "frame's counts fall in the crop around where the model's instrument "
                         "puts the direct beam: another geometry or orientation?")
    lit = totals > 0
    if not lit.any():
        return
    axis = np.arange(size) - size // 2
    cy = (binned.sum(axis=2) @ axis)[lit] / totals[lit]
    cx = (binned.sum(axis=1) @ axis)[lit] / totals[lit]
    off = np.hypot(cx, cy)
    worst = int(np.argmax(off))
    if off[worst] > BEAM_TOLERANCE * size:
        raise FrameError("beam", f"the frame's intensity is centred {off[worst]:.0f} binned pixels "
                         f"from where the model's instrument puts the direct beam (tolerance "
                         f"{BEAM_TOLERANCE * size:.0f}): another geometry or orientation?")
