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


def _unit(moduli: np.ndarray) -> np.ndarray:
    """Each of the moduli (n, s, s) scaled, in place, to unit total intensity."""
    moduli /= np.sqrt(np.square(moduli).sum(axis=(1, 2), keepdims=True)) + 1e-12
    return moduli


def variation(probe: np.ndarray, binned: np.ndarray, amplitude: np.ndarray,
              phase: np.ndarray) -> tuple[float, float]:
    """Whether answers tell the frames (n, s, s) apart: how much the frames vary from frame
    to frame beyond their counting noise, over that noise; and the share of that variation
    the diffraction the answers predict explains (0: one answer for every frame, or answers
    no truer than that; 1: all of it). 0 for both where the frames vary no more than noise.

    The residual is the misfit of the mean frame plus the misfit of each frame's departure
    from it; the second, less the noise, over the frames' departures less the noise, is
    the share not explained. Amplitudes are scaled as the residual scales them; the noise
    of the square root of a count c is taken as c / (1 + 4c) (1/4 for large counts, c for
    small)."""
    counts = np.clip(np.asarray(binned, dtype=np.float64), 0, None)
    measured = _unit(np.sqrt(counts))
    measured -= measured.mean(axis=0)
    patches = (np.asarray(amplitude) * np.exp(1j * np.asarray(phase))).astype(np.complex64)
    predicted = _unit(np.sqrt(forward.far_field(probe, patches)).astype(np.float64))
    predicted -= predicted.mean(axis=0)

    def per_frame(square: np.ndarray) -> float:
        return float(np.mean(square.sum(axis=(1, 2))))

    noise = per_frame(counts / (1 + 4 * counts) / (counts.sum(axis=(1, 2), keepdims=True)
                                                    + 1e-12))
    beyond = per_frame(np.square(measured)) - noise
    if beyond <= 0:
        return 0.0, 0.0
    unexplained = per_frame(np.square(predicted - measured)) - noise
    return beyond / (noise or 1.0), 1.0 - unexplained / beyond


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
        predicted = _unit(np.sqrt(forward.far_field(self.probe, patches)))
        measured = _unit(np.sqrt(np.clip(np.asarray(binned, dtype=np.float32), 0, None)))
        return np.square(predicted - measured).sum(axis=(1, 2))
