"""From a detector frame to the network's input, and from the truth to its target.

The same steps in training and at the edge: crop the centre `crop_size` pixels
of the diffraction (where the direct beam is), bin them down to the model's
`input_size`, then log1p and a fixed scale. Binning the diffraction by b shrinks
the real-space field of view by b, so the target is the central
`input_size` x `input_size` object pixels under the probe, at the simulator's
object pixel size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


class FrameError(ValueError):
    """A frame the model cannot take; `kind` names the fault for the statistics."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Preprocessing:
    crop_size: int = 128
    input_size: int = 64
    scale: float = 0.1  # log1p(counts) x scale is about 0..1 at 1e6 photons per frame

    def __post_init__(self) -> None:
        if self.crop_size % self.input_size:
            raise ValueError(f"crop size {self.crop_size} must be a multiple of the input "
                             f"size {self.input_size}")

    @property
    def binning(self) -> int:
        return self.crop_size // self.input_size

    def as_dict(self) -> dict:
        return asdict(self)

    def frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, ny, nx) integer counts -> (n, 1, input, input) float32 network input."""
        return self.normalise(self.binned(frames))

    def binned(self, frames: np.ndarray) -> np.ndarray:
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
        ny, nx = frames.shape[1:]
        if min(ny, nx) < self.crop_size:
            raise FrameError("too_small", f"frame {nx}x{ny} is smaller than the model's "
                             f"{self.crop_size}x{self.crop_size} crop")
        top, left = (ny - self.crop_size) // 2, (nx - self.crop_size) // 2
        crop = frames[:, top:top + self.crop_size, left:left + self.crop_size]
        b = self.binning
        return crop.astype(np.float32).reshape(
            len(crop), self.input_size, b, self.input_size, b).sum(axis=(2, 4))

    def normalise(self, binned: np.ndarray) -> np.ndarray:
        """(n, input, input) counts -> (n, 1, input, input) network input."""
        return (np.log1p(binned) * self.scale)[:, None].astype(np.float32)

    def targets(self, patches: np.ndarray) -> np.ndarray:
        """(n, N, N) complex object patches -> (n, 2, input, input) amplitude, phase."""
        n = patches.shape[-1]
        top = (n - self.input_size) // 2
        centre = patches[:, top:top + self.input_size, top:top + self.input_size]
        return np.stack([np.abs(centre), np.angle(centre)], axis=1).astype(np.float32)
