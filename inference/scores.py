"""Scores against ground truth, amplitude and phase apart: SSIM, Pearson correlation and
PSNR, each beside what a flat image (a constant at the truth's mean) would score, since
SSIM alone flatters a blurry image."""

from __future__ import annotations

import numpy as np

from ptychoedge.inference.metrics import psnr, ssim

CHANNELS = (("amplitude", 0, 1.0), ("phase", 1, 2 * np.pi))  # name, index, data range


def correlation(got: np.ndarray, want: np.ndarray) -> float:
    """Pearson correlation; 0 for a constant image."""
    got, want = np.ravel(got), np.ravel(want)
    if np.ptp(got) == 0 or np.ptp(want) == 0:
        return 0.0
    return float(np.corrcoef(got, want)[0, 1])


def image_scores(got: np.ndarray, want: np.ndarray, data_range: float,
                 mask: np.ndarray | None = None) -> dict[str, float]:
    """SSIM, correlation and PSNR of one 2-D image against the truth (over `mask`)."""
    inside = np.ones(want.shape, bool) if mask is None else mask
    return {"ssim": ssim(got, want, data_range, mask),
            "correlation": correlation(got[inside], want[inside]),
            "psnr": psnr(got[inside], want[inside], data_range)}


def scored(got: np.ndarray, want: np.ndarray, data_range: float, name: str,
           mask: np.ndarray | None = None) -> dict[str, float]:
    """`image_scores` as `{name}_ssim`, ..., with a flat image's as `flat_{name}_ssim`, ..."""
    inside = np.ones(want.shape, bool) if mask is None else mask
    flat = np.full(want.shape, want[inside].mean())
    result = {f"{name}_{key}": value for key, value in image_scores(got, want, data_range,
                                                                     mask).items()}
    result |= {f"flat_{name}_{key}": value for key, value in image_scores(
        flat, want, data_range, mask).items()}
    return result


def image_pair_scores(predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Mean per-patch SSIM of (n, 2, s, s) amplitude-phase patches against the truth;
    correlation and PSNR over all patches' pixels together."""
    result: dict[str, float] = {}
    for name, index, data_range in CHANNELS:
        per_patch = [scored(p[index], t[index], data_range, name)
                     for p, t in zip(predicted, targets, strict=True)]
        for key in per_patch[0]:
            result[key] = float(np.mean([entry[key] for entry in per_patch]))
        # over every patch's pixels together: a constant patch has no correlation, and a
        # flat guess of a constant patch an infinite PSNR
        want = targets[:, index]
        result[f"{name}_correlation"] = correlation(predicted[:, index], want)
        result[f"{name}_psnr"] = psnr(predicted[:, index], want, data_range)
        result[f"flat_{name}_psnr"] = psnr(np.full(want.shape, want.mean()), want, data_range)
    return result
