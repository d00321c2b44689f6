"""Ptychography forward model, vectorised in numpy.

A complex sample is scanned under a focused probe; each frame is the far-field
diffraction |FFT(probe x object patch)|^2 (orthonormal FFT, direct beam in the
centre), scaled so a transparent sample gives `photons` counts, with Poisson
noise. Positions are in metres, x then y, 0 at the sample centre; outside the
sample is free space (transmission 1).
"""

from __future__ import annotations

import numpy as np

OBJECT_PIXEL_SIZE = 10e-9  # m per object pixel at the sample
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))
PIXEL_TYPES = (np.uint8, np.uint16, np.uint32)


def raster_positions(n_x: int, n_y: int, step: float) -> np.ndarray:
    """(n_x*n_y, 2) positions (x, y) in metres, row by row, centred on 0."""
    if n_x < 1 or n_y < 1 or step <= 0:
        raise ValueError(f"raster needs n_x, n_y >= 1 and step > 0, got {n_x}, {n_y}, {step}")
    xs = (np.arange(n_x) - (n_x - 1) / 2) * step
    ys = (np.arange(n_y) - (n_y - 1) / 2) * step
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.column_stack([grid_x.ravel(), grid_y.ravel()])


def fermat_spiral_positions(n_points: int, step: float) -> np.ndarray:
    """(n, 2) positions (x, y) in metres on a Fermat spiral, neighbours about `step` apart."""
    if n_points < 1 or step <= 0:
        raise ValueError(f"spiral needs n_points >= 1 and step > 0, got {n_points}, {step}")
    k = np.arange(n_points)
    # Each point covers an area step^2 on average: pi r^2 = k step^2.
    radius = step * np.sqrt(k / np.pi) * 1.05
    angle = k * GOLDEN_ANGLE
    positions = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    return positions - positions.mean(axis=0)


def step_for_overlap(probe_diameter: float, overlap: float) -> float:
    """The scan step that gives linear overlap `overlap` between neighbouring probes."""
    if probe_diameter <= 0 or not 0 <= overlap < 1:
        raise ValueError(f"need probe_diameter > 0 and 0 <= overlap < 1, "
                         f"got {probe_diameter}, {overlap}")
    return probe_diameter * (1.0 - overlap)


def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Random field with features about `scale` pixels wide, normalised to [0, 1]."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    envelope = np.exp(-(fx**2 + fy**2) * (np.pi * scale) ** 2 / 2).astype(np.float32)
    noise = rng.standard_normal(shape, dtype=np.float32)
    field = np.fft.irfft2(np.fft.rfft2(noise) * envelope, s=shape)
    field -= field.min()
    return field / max(float(field.max()), 1e-12)


def make_sample(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A procedural complex sample: particles and texture at several scales.

    Amplitude lies in about [0.3, 1], phase in about [-1.5, 1.5] rad; the two
    are partly independent, as in a real sample of mixed materials.
    """
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"sample shape must be 2-D and at least 8x8, got {shape}")
    rng = np.random.default_rng(seed)
    density = (0.5 * _smooth_noise(shape, 24.0, rng) + 0.3 * _smooth_noise(shape, 6.0, rng)
               + 0.2 * _smooth_noise(shape, 2.0, rng))
    # Particles: discs of random size and thickness.
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    particles = np.zeros(shape, np.float32)
    n_particles = max(4, shape[0] * shape[1] // 4000)
    centres = rng.uniform(0, 1, (n_particles, 2)) * np.array(shape)
    radii = rng.uniform(3, 20, n_particles)
    heights = rng.uniform(0.3, 1.0, n_particles)
    for (cy, cx), radius, height in zip(centres, radii, heights, strict=True):
        y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius + 1, shape[0]))
        x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius + 1, shape[1]))
        inside = (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= radius**2
        particles[y0:y1, x0:x1] = np.maximum(particles[y0:y1, x0:x1], height * inside)
    thickness = np.clip(0.6 * density + 0.6 * particles, 0, 1)
    phase_texture = _smooth_noise(shape, 10.0, rng)
    amplitude = 1.0 - 0.7 * thickness
    phase = 3.0 * (0.7 * thickness + 0.3 * phase_texture) - 1.5
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_probe(size: int, diameter_px: float, defocus: float = 6.0) -> np.ndarray:
    """A focused probe in a size x size window, sum of |probe|^2 = 1.

    A soft-edged disc of `diameter_px` object pixels with a quadratic phase of
    `defocus` radians at its rim, as a slightly defocused focused beam.
    """
    if size < 8 or not 0 < diameter_px <= size:
        raise ValueError(f"probe needs size >= 8 and 0 < diameter <= size, got {size}, "
                         f"{diameter_px}")
    coords = np.arange(size) - (size - 1) / 2
    r = np.hypot(coords[:, None], coords[None, :]) / (diameter_px / 2)
    amplitude = 0.5 * (1 - np.tanh((r - 1) * 6))  # smooth edge, about 1/6 radius wide
    probe = amplitude * np.exp(1j * defocus * r**2)
    return (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex64)


class PtychographySimulator:
    """Frames of a ptychography scan and the ground truth under each."""

    def __init__(self, detector_size: int = 128, *, photons: float = 1e6,
                 dtype: type = np.uint16, seed: int = 0, sample: np.ndarray | None = None,
                 probe: np.ndarray | None = None, pixel_size: float = OBJECT_PIXEL_SIZE,
                 sample_shape: tuple[int, int] | None = None):
        if not 8 <= detector_size <= 4096:
            raise ValueError(f"detector size must be 8..4096 pixels, got {detector_size}")
        if not photons > 0:
            raise ValueError(f"photons must be positive, got {photons}")
        if np.dtype(dtype) not in [np.dtype(t) for t in PIXEL_TYPES]:
            raise ValueError(f"pixel type must be uint8, uint16 or uint32, got {dtype}")
        if pixel_size <= 0:
            raise ValueError(f"pixel size must be positive, got {pixel_size}")
        self.detector_size = n = detector_size
        self.photons = float(photons)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.pixel_size = pixel_size
        if sample is None:
            side = int(np.clip(6 * n, 512, 4096))
            sample = make_sample(sample_shape or (side, side), seed)
        self.sample = np.asarray(sample, np.complex64)
        if probe is None:
            probe = make_probe(n, n / 2)
        if probe.shape != (n, n):
            raise ValueError(f"probe must be {n}x{n}, got {probe.shape}")
        self.probe = np.asarray(probe, np.complex64)
        # Free space around the sample, so patches off its edge read transmission 1.
        self._padded = np.pad(self.sample, n, constant_values=1)

    def positions_to_pixels(self, positions: np.ndarray) -> np.ndarray:
        """Top-left object pixel (x, y) of the patch under the probe at each position."""
        positions = self._check(positions)
        centre = np.array(self.sample.shape[::-1]) // 2
        return (np.rint(positions / self.pixel_size).astype(np.int64) + centre
                - self.detector_size // 2)

    def object_patches(self, positions: np.ndarray) -> np.ndarray:
        """(n, N, N) complex transmission under the probe window at each position."""
        n = self.detector_size
        corners = self.positions_to_pixels(positions) + n  # into the padded sample
        height, width = self._padded.shape
        corners[:, 0] = np.clip(corners[:, 0], 0, width - n)
        corners[:, 1] = np.clip(corners[:, 1], 0, height - n)
        window = np.arange(n)
        rows = corners[:, 1, None, None] + window[None, :, None]
        cols = corners[:, 0, None, None] + window[None, None, :]
        return self._padded[rows, cols]

    def intensities(self, positions: np.ndarray) -> np.ndarray:
        """Expected counts |FFT(probe x patch)|^2, direct beam centred, float32."""
        exit_waves = self.probe * self.object_patches(positions)
        far_field = np.fft.fftshift(np.fft.fft2(exit_waves, norm="ortho"), axes=(-2, -1))
        # sum |probe|^2 is 1, so by Parseval a transparent sample gives `photons` in total.
        scale = self.photons / float(np.sum(np.abs(self.probe) ** 2))
        return (scale * (far_field.real**2 + far_field.imag**2)).astype(np.float32)

    def frames(self, positions: np.ndarray,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noisy detector frames and the true object patch of each.

        Without `rng` the noise is seeded from the simulator's seed and the
        positions, so the same positions always give the same frames.
        """
        positions = self._check(positions)
        if rng is None:
            pixels = self.positions_to_pixels(positions)
            rng = np.random.default_rng([self.seed, *np.abs(pixels).ravel()[:64].tolist(),
                                         len(positions)])
        truth = self.object_patches(positions)
        counts = rng.poisson(self.intensities(positions))
        ceiling = np.iinfo(self.dtype).max
        return np.minimum(counts, ceiling).astype(self.dtype), truth

    @staticmethod
    def _check(positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"positions must be (n, 2) metres (x, y), got {positions.shape}")
        return positions
