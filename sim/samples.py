"""Sample families: complex transmission functions, deterministic for a seed.

Every family but `default` draws a normalised projected thickness h in [0, 1] and
makes it a transmission as one material would: phase = -phase_max x h (rad) and
amplitude = exp(-phase_max x h / delta_beta), since a material of refractive index
1 - delta + i beta shifts the phase by 2 pi delta t / wavelength and attenuates the
amplitude by exp(-2 pi beta t / wavelength) over a thickness t. So phase_max is the
phase of the thickest point (2 pi delta t_max / wavelength) and the amplitude lies in
[exp(-phase_max / delta_beta), 1]. Empty space is h = 0: transmission 1. Images are
indexed [row = y, column = x], any shape of at least 8 x 8 pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ptychoedge.sim import physics


class SampleError(ValueError):
    """A sample that cannot be made, with the reason."""


def transmission(thickness: np.ndarray, phase_max: float, delta_beta: float) -> np.ndarray:
    """complex64 transmission of a normalised projected thickness in [0, 1]."""
    if not 0 < phase_max < np.inf:
        raise SampleError(f"phase_max must be positive and finite, got {phase_max}")
    if not 0 < delta_beta < np.inf:
        raise SampleError(f"delta_beta must be positive and finite, got {delta_beta}")
    phase = -phase_max * thickness.astype(np.float64)
    return np.exp(phase / delta_beta + 1j * phase).astype(np.complex64)


def labyrinth(shape: tuple[int, int], seed: int = 0, *, period: float = 16.0,
              phase_max: float = 1.0, delta_beta: float = 10.0) -> np.ndarray:
    """Dense maze-like domains (as spinodal decomposition or magnetic stripe domains).

    Gaussian noise band-passed around one spatial period (`period` pixels, the width
    of a domain and its neighbour), thresholded at zero with a 1.5 pixel soft edge;
    about half the area is full thickness.
    """
    shape = _check_shape(shape)
    if not 4 <= period < np.inf:
        raise SampleError(f"labyrinth period must be at least 4 pixels, got {period}")
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    centre = 1.0 / period
    # A narrow band (20% wide) makes stripes that meander and branch, not blobs.
    band = np.exp(-(((np.hypot(fx, fy) - centre) / (0.2 * centre)) ** 2) / 2)
    noise = rng.standard_normal(shape)
    field = np.fft.irfft2(np.fft.rfft2(noise) * band, s=shape)
    field /= field.std()
    # The field's slope across an edge is about 2 pi / period per pixel (in std units).
    thickness = 0.5 * (1 + np.tanh(field * period / (2 * np.pi * 1.5)))
    return transmission(thickness, phase_max, delta_beta)


def siemens_star(shape: tuple[int, int], seed: int = 0, *, spokes: int = 36,
                 phase_max: float = 1.0, delta_beta: float = 10.0) -> np.ndarray:
    """A lithographic Siemens star: `spokes` opaque wedges with sharp (anti-aliased) edges.

    Radius 45% of the smaller side, centred within a few percent of the middle and
    rotated by an angle the seed sets; resolution rings (gaps of 2 pixels) at 1/4,
    1/2 and 3/4 of the radius, and an empty centre of radius `spokes` / pi pixels
    where the wedges would be narrower than a pixel.
    """
    shape = _check_shape(shape)
    if not 2 <= spokes <= 1000:
        raise SampleError(f"a Siemens star needs 2..1000 spokes, got {spokes}")
    rng = np.random.default_rng(seed)
    radius = 0.45 * min(shape)
    cy, cx = (np.array(shape) / 2 + rng.uniform(-0.03, 0.03, 2) * min(shape))
    rotation = rng.uniform(0, 2 * np.pi / spokes)
    y, x = np.indices(shape, dtype=np.float64)
    r = np.hypot(y - cy, x - cx)
    # Position within a spoke period, in [0, 2): the wedge fills [0, 1).
    phase = ((np.arctan2(y - cy, x - cx) - rotation) * spokes / np.pi) % 2.0
    # Signed distance (pixels, along the arc) to the nearest wedge edge: > 0 inside.
    to_edge = np.minimum(phase % 1.0, 1.0 - phase % 1.0) * r * np.pi / spokes
    inside = np.where(phase < 1.0, to_edge, -to_edge)
    thickness = np.clip(inside + 0.5, 0.0, 1.0)
    thickness *= np.clip(radius - r + 0.5, 0.0, 1.0)
    thickness *= np.clip(r - spokes / np.pi + 0.5, 0.0, 1.0)
    for ring in (0.25, 0.5, 0.75):
        thickness *= np.clip(np.abs(r - ring * radius) - 1.0 + 0.5, 0.0, 1.0)
    return transmission(thickness, phase_max, delta_beta)


def fibres(shape: tuple[int, int], seed: int = 0, *, count: int | None = None,
           radii: tuple[float, float] = (1.5, 10.0), phase_max: float = 1.0,
           delta_beta: float = 30.0) -> np.ndarray:
    """Straight cylindrical fibres crossing the sample, log-uniform radii (pixels).

    Projected thickness 2 sqrt(R^2 - d^2) at distance d from a fibre's axis; crossing
    fibres add. Default count: one per 40 pixels of the longer side.
    """
    shape = _check_shape(shape)
    _check_radii(radii)
    rng = np.random.default_rng(seed)
    count = max(1, max(shape) // 40) if count is None else count
    y, x = np.indices(shape, dtype=np.float64)
    thickness = np.zeros(shape)
    for radius in _log_uniform(rng, radii, count):
        cy, cx = rng.uniform(0, 1, 2) * shape
        angle = rng.uniform(0, np.pi)
        distance = np.abs((x - cx) * np.sin(angle) - (y - cy) * np.cos(angle))
        thickness += 2 * np.sqrt(np.clip(radius**2 - distance**2, 0.0, None))
    return transmission(thickness / thickness.max(), phase_max, delta_beta)


def particles(shape: tuple[int, int], seed: int = 0, *, fill: float = 0.4,
              radii: tuple[float, float] = (1.5, 40.0), phase_max: float = 1.0,
              delta_beta: float = 10.0) -> np.ndarray:
    """Spheres of many sizes (log-uniform radii, pixels) covering about `fill` of the area.

    Projected thickness 2 sqrt(R^2 - r^2), so a small particle is thin as well as
    narrow; overlapping spheres add.
    """
    shape = _check_shape(shape)
    _check_radii(radii)
    if not 0 < fill <= 2:
        raise SampleError(f"fill must be in (0, 2], got {fill}")
    rng = np.random.default_rng(seed)
    low, high = radii
    mean_area = np.pi * (high**2 - low**2) / (2 * np.log(high / low))
    count = max(1, int(round(fill * shape[0] * shape[1] / mean_area)))
    thickness = _stamp_spheres(shape, _log_uniform(rng, radii, count), rng)
    return transmission(thickness / thickness.max(), phase_max, delta_beta)


def strong_phase(shape: tuple[int, int], seed: int = 0, *, phase_max: float = 3 * np.pi,
                 delta_beta: float = 100.0) -> np.ndarray:
    """A thick, weakly absorbing object whose phase (to -phase_max) wraps.

    Large smooth spheres (radii 20-120 pixels) over a slowly varying film: phase
    gradients stay below about one radian per pixel while the total phase passes 2 pi.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    radii = (min(20.0, min(shape) / 8), min(120.0, min(shape) / 3))
    mean_area = np.pi * (radii[1] ** 2 - radii[0] ** 2) / (2 * np.log(radii[1] / radii[0]))
    count = max(1, int(round(0.6 * shape[0] * shape[1] / mean_area)))
    spheres = _stamp_spheres(shape, _log_uniform(rng, radii, count), rng)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    smooth = np.exp(-((np.hypot(fx, fy) * 64) ** 2))
    film = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * smooth, s=shape)
    film = (film - film.min()) / (np.ptp(film) or 1.0)
    thickness = spheres / spheres.max() + 0.3 * film
    return transmission(thickness / thickness.max(), phase_max, delta_beta)


def default(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Today's simulator sample, physics.make_sample, unchanged."""
    return physics.make_sample(shape, seed)


@dataclass(frozen=True)
class SampleKind:
    make: Callable[..., np.ndarray]
    phase_max: float | None  # rad at unit thickness scale; None: not a one-material family
    description: str


SAMPLE_KINDS = {
    "default": SampleKind(default, None, "the simulator's own sample: particles and fibres "
                          "on a textured substrate (amplitude 0.3-1, phase -pi/2-0)"),
    "labyrinth": SampleKind(labyrinth, 1.0, "dense maze-like domains of 160 nm period"),
    "siemens-star": SampleKind(siemens_star, 1.0, "a 36-spoke Siemens star with resolution "
                               "rings"),
    "fibres": SampleKind(fibres, 1.0, "crossing cylindrical fibres, 30-200 nm across"),
    "particles": SampleKind(particles, 1.0, "spheres of 30-800 nm diameter, log-uniform"),
    "strong-phase": SampleKind(strong_phase, 3 * np.pi, "thick, weakly absorbing spheres "
                               "on a film, whose phase wraps"),
}


def describe(kind: str, thickness: float = 1.0) -> str:
    """One line saying what a sample kind is; sizes assume 10 nm pixels."""
    entry = _kind(kind)
    if entry.phase_max is None:
        return f"{kind}: {entry.description}" + (
            f", {thickness:g} x as thick" if thickness != 1.0 else "")
    return f"{kind}: {entry.description}, phase -{thickness * entry.phase_max:.2f}-0 rad"


def named_sample(kind: str, shape: tuple[int, int], seed: int = 0,
                 thickness: float = 1.0) -> np.ndarray:
    """A sample of family `kind` (see SAMPLE_KINDS), `thickness` times its usual thickness.

    A thicker sample of the same material: phase and log-amplitude scale together.
    `default`, whose phase never wraps, is scaled as T -> |T|^s exp(i s arg T).
    """
    entry = _kind(kind)
    if not 0 < thickness < np.inf:
        raise SampleError(f"thickness scale must be positive and finite, got {thickness}")
    if entry.phase_max is not None:
        return entry.make(shape, seed, phase_max=thickness * entry.phase_max)
    sample = entry.make(shape, seed)
    if thickness == 1.0:
        return sample
    return (np.abs(sample) ** thickness
            * np.exp(1j * thickness * np.angle(sample))).astype(np.complex64)


def _kind(kind: str) -> SampleKind:
    if kind not in SAMPLE_KINDS:
        raise SampleError(f"unknown sample {kind!r}: use one of {', '.join(SAMPLE_KINDS)}")
    return SAMPLE_KINDS[kind]


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 8:
        raise SampleError(f"sample shape must be 2-D and at least 8 x 8, got {shape}")
    return int(shape[0]), int(shape[1])


def _check_radii(radii: tuple[float, float]) -> None:
    if not 0.5 <= radii[0] <= radii[1]:
        raise SampleError(f"radii must satisfy 0.5 <= smallest <= largest, got {radii}")


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float],
                 count: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), count))


def _stamp_spheres(shape: tuple[int, int], radii: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Summed projected thickness 2 sqrt(R^2 - r^2) (pixels) of spheres at random places."""
    thickness = np.zeros(shape)
    height, width = shape
    for radius, cy, cx in zip(radii, rng.uniform(0, height, len(radii)),
                              rng.uniform(0, width, len(radii)), strict=True):
        half = int(np.ceil(radius)) + 1
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, height)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        r2 = (np.arange(y0, y1)[:, None] - cy) ** 2 + (np.arange(x0, x1)[None, :] - cx) ** 2
        thickness[y0:y1, x0:x1] += 2 * np.sqrt(np.clip(radius**2 - r2, 0.0, None))
    return thickness
