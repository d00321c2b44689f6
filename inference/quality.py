"""How far a reconstruction is from explaining its own frame.

A network answers even for frames unlike anything it was trained on. This
check needs no ground truth: the reconstructed patch behind the model's probe (all
its modes), through the forward model (forward.py), predicts the diffraction; the
residual is the distance between the predicted and measured diffraction amplitudes
(square roots of the counts), each scaled to unit total intensity. 0 is a perfect
fit, 2 the most it can be; a frame the model does not know scores clearly higher than
the frames it was validated on.
"""

from __future__ import annotations

import numpy as np

from ptychoedge.inference import forward
from ptychoedge.inference.manifest import Manifest


class DiffractionResidual:
    def __init__(self, manifest: Manifest):
        self.probe = manifest.probe

    def __call__(self, binned: np.ndarray, amplitude: np.ndarray,
                 phase: np.ndarray) -> np.ndarray:
        """(n,) residuals of binned counts (n, s, s) against amplitude and phase (n, s, s)."""
        amplitude = np.asarray(amplitude, dtype=np.float32)
        phase = np.asarray(phase, dtype=np.float32)
        patches = np.empty(amplitude.shape, np.complex64)  # 6x faster than amplitude x exp(i phase)
        patches.real = amplitude * np.cos(phase)
        patches.imag = amplitude * np.sin(phase)
        predicted = np.sqrt(forward.far_field(self.probe, patches))
        measured = np.sqrt(np.clip(np.asarray(binned, dtype=np.float32), 0, None))
        predicted /= np.sqrt(np.square(predicted).sum(axis=(1, 2), keepdims=True)) + 1e-12
        measured /= np.sqrt(np.square(measured).sum(axis=(1, 2), keepdims=True)) + 1e-12
        return np.square(predicted - measured).sum(axis=(1, 2))
