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
import torch

from ptychoedge.inference import forward
from ptychoedge.inference.manifest import Manifest


class DiffractionResidual:
    def __init__(self, manifest: Manifest):
        self.probe = torch.from_numpy(manifest.probe)

    def __call__(self, binned: np.ndarray, amplitude: np.ndarray,
                 phase: np.ndarray) -> np.ndarray:
        """(n,) residuals of binned counts (n, s, s) against amplitude and phase (n, s, s)."""
        # torch, not numpy: its complex64 FFT is about 10x faster here (under 10% of inference).
        patches = torch.polar(torch.as_tensor(np.ascontiguousarray(amplitude), dtype=torch.float32),
                              torch.as_tensor(np.ascontiguousarray(phase), dtype=torch.float32))
        predicted = forward.far_field(self.probe, patches).sqrt()
        measured = torch.as_tensor(binned, dtype=torch.float32).clamp(min=0).sqrt()
        predicted = predicted / (predicted.square().sum(dim=(1, 2), keepdim=True).sqrt() + 1e-12)
        measured = measured / (measured.square().sum(dim=(1, 2), keepdim=True).sqrt() + 1e-12)
        return (predicted - measured).square().sum(dim=(1, 2)).numpy()
