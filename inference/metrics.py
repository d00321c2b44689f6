"""Image quality against ground truth: SSIM (Wang et al. 2004) and PSNR."""

from __future__ import annotations

import numpy as np

SIGMA = 1.5  # px, the Gaussian window of the original SSIM
K1, K2 = 0.01, 0.03


def _gaussian_filter(image: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    radius = int(3.5 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view
    rows = windows(padded, kernel.size, axis=1) @ kernel
    return windows(rows, kernel.size, axis=0) @ kernel


def ssim(a: np.ndarray, b: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
    """Mean structural similarity of two 2-D images (over `mask` if given); 1 when identical."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of one shape, got {a.shape}, {b.shape}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a**2
    var_b = _gaussian_filter(b * b) - mu_b**2
    covariance = _gaussian_filter(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)
             / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(index.mean() if mask is None else index[mask].mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB; infinite when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def mean_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean SSIM over a batch of 2-D images, (n, h, w) each."""
    return float(np.mean([ssim(x, y, data_range) for x, y in zip(a, b, strict=True)]))


def mean_psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean per-image PSNR over a batch of 2-D images, (n, h, w) each."""
    values = [psnr(x, y, data_range) for x, y in zip(a, b, strict=True)]
    return float(np.mean(values))
