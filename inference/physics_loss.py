"""Losses that need no labels: the measured frames and the overlap of neighbours.

`diffraction_loss`: the predicted patch behind the model's probe, through the forward
model, against the measured counts, compared as square roots (amplitudes) pixel by
pixel. `overlap_loss`: two neighbouring frames see the same object where their
fields overlap, so their predicted patches must agree there, up to a constant phase:
a frame's diffraction does not fix its patch's, so a network cannot learn it from the
frame (on an object whose phase spans several radians, asking for it cost the stitched
phase a third of its correlation with the truth, MODELS.md). The mosaic of such a model
aligns each patch's constant phase with its neighbours' (`Mosaic.for_model`).
"""

from __future__ import annotations

import numpy as np
import torch

from ptychoedge.inference import forward


def complex_patches(output: torch.Tensor) -> torch.Tensor:
    """(n, 2, s, s) amplitude and phase -> (n, s, s) complex."""
    return torch.polar(output[:, 0], output[:, 1])


def diffraction_loss(output: torch.Tensor, counts: torch.Tensor, probe: torch.Tensor,
                     photons: float, measured: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared amplitude misfit, in units of the frames' mean count per pixel, over
    the pixels `measured` (s, s; 1 where a pixel holds a measurement) or all of them."""
    predicted = photons * forward.far_field(probe, complex_patches(output))
    misfit = (predicted + 1e-6).sqrt() - counts.clamp(min=0).sqrt()
    if measured is None:
        return misfit.square().mean() / counts.mean().clamp(min=1e-6)
    return (misfit.square() * measured).sum() / (counts * measured).sum().clamp(min=1e-6)


def neighbour_pairs(pixels: np.ndarray, size: int, most: int = 4) -> np.ndarray:
    """(m, 2) index pairs (i, j), i < j, of frames whose fields overlap by at least half,
    each frame with up to `most` nearest partners. `pixels` are (n, 2) positions in
    object pixels of the network's output."""
    distance = np.linalg.norm(pixels[:, None] - pixels[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    pairs = set()
    for i, row in enumerate(distance):
        for j in np.argsort(row)[:most]:
            if row[j] <= size / 2:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def overlap_loss(first: torch.Tensor, second: torch.Tensor, shifts: np.ndarray,
                 weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean |O_a - exp(i c) O_b|^2 over the overlaps of complex patch pairs
    (m, s, s), each pair at the constant phase c that fits it best.

    `shifts` (m, 2) are the integer (x, y) object pixels from a's position to b's;
    `weight` (s, s) is the probe's intensity, so well-lit pixels count most.
    """
    size = first.shape[-1]
    total = weight.new_zeros(())
    norm = weight.new_zeros(())
    for a, b, (dx, dy) in zip(first, second, shifts, strict=True):
        # pixel (y, x) of b is pixel (y + dy, x + dx) of a
        ya, yb = slice(max(dy, 0), size + min(dy, 0)), slice(max(-dy, 0), size + min(-dy, 0))
        xa, xb = slice(max(dx, 0), size + min(dx, 0)), slice(max(-dx, 0), size + min(-dx, 0))
        w = weight[ya, xa] * weight[yb, xb]
        here, there = a[ya, xa], b[yb, xb]
        # min over c of sum w |here - exp(i c) there|^2
        total = total + ((w * (here.abs().square() + there.abs().square())).sum()
                         - 2 * (w * here * there.conj()).sum().abs())
        norm = norm + w.sum()
    return total / norm.clamp(min=1e-12)
