"""How far a reconstruction is from explaining its own frame.

A network answers even for frames unlike anything it was trained on. This
check needs no ground truth: the reconstructed patch behind the model's probe (all
its modes), through the forward model (forward.py), predicts the diffraction; the
residual is the distance between the predicted and measured diffraction amplitudes
(square roots of the counts), each scaled to unit total intensity. 0 is a perfect
fit, 2 the most it can be; a frame the model does not know scores clearly higher than
the frames it was validated on. Binned pixels that hold no measurement (all their
detector pixels masked) are left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptychoedge.inference import forward
from ptychoedge.inference.manifest import Manifest


def _unit(moduli: np.ndarray) -> np.ndarray:
    """Each of the moduli (n, s, s) scaled, in place, to unit total intensity."""
    moduli /= np.sqrt(np.square(moduli).sum(axis=(1, 2), keepdims=True)) + 1e-12
    return moduli


def variation(probe: np.ndarray, binned: np.ndarray, amplitude: np.ndarray,
              phase: np.ndarray, measured: np.ndarray | None = None) -> tuple[float, float]:
    """Whether answers tell the frames (n, s, s) apart: `Spread.figures` of these frames."""
    return Fit(probe, measured)(binned, amplitude, phase)[1].figures()


@dataclass
class Spread:
    """Sums over frames from which follow how much they vary from frame to frame beyond
    their counting noise, and how much of that the diffraction their answers predict
    explains. Sums add, so a running window of frames is a sum of batches.

    The residual is the misfit of the mean frame plus the misfit of each frame's departure
    from it; the second, less the noise, over the frames' departures less the noise, is the
    share not explained. Amplitudes are scaled as the residual scales them; the noise of
    the square root of a count c is taken as c / (1 + 4c) (1/4 for large counts, c for
    small)."""

    frames: int
    measured: np.ndarray  # (s, s) sum of the frames' scaled amplitudes
    misfit: np.ndarray  # (s, s) sum of predicted less measured scaled amplitudes
    power: float  # sum of each frame's squared scaled amplitudes (1 unless a frame is empty)
    residual: float  # sum of the residuals: each frame's squared misfit
    noise: float  # sum of each frame's noise in the squared scaled amplitudes

    def __add__(self, other: Spread) -> Spread:
        return Spread(self.frames + other.frames, self.measured + other.measured,
                      self.misfit + other.misfit, self.power + other.power,
                      self.residual + other.residual, self.noise + other.noise)

    def figures(self) -> tuple[float, float]:
        """How much the frames vary beyond their noise, over that noise; and the share of
        that variation the answers explain (0: one answer for every frame, or answers no
        truer than that; 1: all of it). 0 for both where the frames vary no more than noise.
        """
        n = max(self.frames, 1)
        noise = self.noise / n
        beyond = self.power / n - float(np.square(self.measured / n).sum()) - noise
        if beyond <= 0:
            return 0.0, 0.0
        unexplained = self.residual / n - float(np.square(self.misfit / n).sum()) - noise
        return beyond / (noise or 1.0), 1.0 - unexplained / beyond


class Fit:
    """How far answers (amplitude, phase) explain their frames through `probe`, over the
    binned pixels `measured` (s, s) holds (all where None)."""

    def __init__(self, probe: np.ndarray, measured: np.ndarray | None = None):
        self.probe = probe
        self.weight = None if measured is None else measured.astype(np.float32)

    @classmethod
    def of(cls, manifest: Manifest) -> Fit:
        return cls(manifest.probe, manifest.preprocessing.measured())

    def __call__(self, binned: np.ndarray, amplitude: np.ndarray,
                 phase: np.ndarray) -> tuple[np.ndarray, Spread]:
        """(n,) residuals of binned counts (n, s, s) against amplitude and phase (n, s, s),
        and their frames' spread."""
        amplitude = np.asarray(amplitude, dtype=np.float32)
        phase = np.asarray(phase, dtype=np.float32)
        patches = np.empty(amplitude.shape, np.complex64)  # 6x faster than amplitude x exp(i phase)
        patches.real = amplitude * np.cos(phase)
        patches.imag = amplitude * np.sin(phase)
        counts = np.clip(np.asarray(binned, dtype=np.float32), 0, None)
        predicted = forward.far_field(self.probe, patches)
        if self.weight is not None:
            counts, predicted = counts * self.weight, predicted * self.weight
        measured = _unit(np.sqrt(counts))
        misfit = _unit(np.sqrt(predicted)) - measured
        residuals = np.square(misfit).sum(axis=(1, 2))
        totals = counts.sum(axis=(1, 2), dtype=np.float64)
        noise = (counts / (1 + 4 * counts)).sum(axis=(1, 2), dtype=np.float64) / (totals + 1e-12)
        spread = Spread(len(counts), measured.sum(axis=0, dtype=np.float64),
                        misfit.sum(axis=0, dtype=np.float64),
                        float(np.square(measured).sum(dtype=np.float64)),
                        float(residuals.sum(dtype=np.float64)), float(noise.sum()))
        return residuals, spread


class DiffractionResidual:
    def __init__(self, manifest: Manifest):
        self.fit = Fit.of(manifest)

    def __call__(self, binned: np.ndarray, amplitude: np.ndarray,
                 phase: np.ndarray) -> np.ndarray:
        """(n,) residuals of binned counts (n, s, s) against amplitude and phase (n, s, s)."""
        return self.fit(binned, amplitude, phase)[0]
