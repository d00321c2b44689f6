"""The one forward model: what a detector records behind a probe and an object patch.

The far-field intensity of the exit wave, summed over the probe's incoherent modes:

    I = photons x sum_m |F(P_m x O)|^2

with F the orthonormal 2-D FFT and the zero frequency (the direct beam) shifted to
pixel (n//2, n//2). A probe has shape (modes, n, n) and total intensity 1, so a
transparent object gives `photons` counts in all. The simulator, the diffraction
residual and physics-informed training all call this, on numpy arrays or on torch
tensors (which keeps gradients).
"""

from __future__ import annotations

from typing import Any

import numpy as np

HC_EV_M = 1.239841984e-6  # Planck's constant x the speed of light, eV m


def wavelength(energy_ev: float) -> float:
    """Photon wavelength in metres."""
    return HC_EV_M / energy_ev


def object_pixel_size(energy_ev: float, distance_m: float, detector_pixel_m: float,
                      detector_pixels: int) -> float:
    """Object pixel (m) of a far-field window of `detector_pixels` detector pixels."""
    return wavelength(energy_ev) * distance_m / (detector_pixels * detector_pixel_m)


def far_field(probe: Any, patches: Any) -> Any:
    """(..., n, n) intensities of object patches (..., n, n) behind `probe` (modes, n, n).

    numpy in, numpy out (float32); torch in, torch out (differentiable).
    """
    if type(patches).__module__.startswith("torch"):
        import torch

        field = torch.fft.fft2(probe * patches.unsqueeze(-3), norm="ortho")
        intensity = (field.real.square() + field.imag.square()).sum(dim=-3)
        return torch.fft.fftshift(intensity, dim=(-2, -1))
    field = np.fft.fft2(np.asarray(probe)[None] * np.asarray(patches)[:, None]
                        if np.ndim(patches) == 3 else probe * patches, norm="ortho")
    intensity = (field.real**2 + field.imag**2).sum(axis=-3)
    return np.fft.fftshift(intensity, axes=(-2, -1)).astype(np.float32)
