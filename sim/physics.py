"""Ptychography forward model, vectorised in numpy.

A complex sample (transmission function) is scanned under a focused probe. Each
detector frame is the far-field diffraction of the exit wave, |FFT(probe x patch)|^2
with an orthonormal FFT and the direct beam in the centre, in photons: a
transparent sample gives `photons` counts per frame. Poisson noise makes the
integer counts.

Conventions: positions are (x, y) in metres, 0 at the sample centre; images are
indexed [row = y, column = x]; outside the sample is free space (transmission 1).
"""

from __future__ import annotations

import numpy as np

from ptychoedge.inference import forward
from ptychoedge.inference.instrument import Geometry, Instrument

# re-exported for the simulator's callers: the scan plans use these patterns too
from ptychoedge.inference.scan_patterns import fermat_spiral_positions as fermat_spiral_positions
from ptychoedge.inference.scan_patterns import raster_positions as raster_positions

OBJECT_PIXEL_SIZE = 10e-9  # metres per object pixel at the sample
# The simulated instrument: 10 keV photons on a 75 um pixel detector, placed so that
# an N-pixel frame sees OBJECT_PIXEL_SIZE object pixels whatever N is.
ENERGY_EV = 10e3
DETECTOR_PIXEL = 75e-6
PIXEL_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
MIN_DETECTOR, MAX_DETECTOR = 8, 4096
BLOCK_ELEMENTS = 2**22  # frames are transformed in blocks of about this many pixels


def step_for_overlap(probe_diameter: float, overlap: float) -> float:
    """Scan step giving linear overlap `overlap` (0 <= overlap < 1) of neighbouring probes."""
    if not probe_diameter > 0:
        raise ValueError(f"probe diameter must be positive, got {probe_diameter}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return probe_diameter * (1.0 - overlap)


def _fractal_field(shape: tuple[int, int], exponent: float, smallest: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with a 1/f^exponent amplitude spectrum, scaled to [0, 1].

    Power-law noise has structure at every scale from the sample size down to
    about `smallest` pixels, where a Gaussian cut-off ends it.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0  # the mean is removed below anyway
    spectrum = f ** -exponent * np.exp(-((f * smallest) ** 2))
    noise = rng.standard_normal(shape).astype(np.float32)
    field = np.fft.irfft2(np.fft.rfft2(noise) * spectrum.astype(np.float32), s=shape)
    low, high = np.percentile(field, [0.5, 99.5])
    return np.clip((field - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _stamp_particles(canvas: np.ndarray, count: int, radii: tuple[float, float],
                     rng: np.random.Generator) -> None:
    """Add `count` soft-edged ellipses of log-uniform size and random density, in place."""
    height, width = canvas.shape
    log_radii = rng.uniform(np.log(radii[0]), np.log(radii[1]), count)
    for a, aspect, theta, density, cy, cx in zip(
            np.exp(log_radii), rng.uniform(0.5, 1.0, count), rng.uniform(0, np.pi, count),
            rng.uniform(0.3, 1.0, count), rng.uniform(0, height, count),
            rng.uniform(0, width, count), strict=True):
        half = int(np.ceil(a)) + 2
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, height)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / (a * aspect)
        # Ellipsoidal thickness profile with a one-pixel soft edge.
        r = np.sqrt(u**2 + v**2)
        edge = np.clip((1.0 - r) * a, 0.0, 1.0)
        profile = density * np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0)) ** 0.5 * edge
        canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], profile)


def _stamp_lines(canvas: np.ndarray, count: int, rng: np.random.Generator) -> None:
    """Add `count` straight fibres or cracks (sharp, thin, long features), in place."""
    height, width = canvas.shape
    for _ in range(count):
        y_a, x_a = rng.uniform(0, 1, 2) * (height, width)
        # Bounded length keeps each stamp's bounding box small on big samples.
        length, angle = rng.uniform(20, 300), rng.uniform(0, 2 * np.pi)
        y_b, x_b = y_a + length * np.sin(angle), x_a + length * np.cos(angle)
        thickness = rng.uniform(0.8, 3.0)
        value = rng.uniform(0.4, 1.0)
        y0, y1 = int(max(min(y_a, y_b) - 4, 0)), int(min(max(y_a, y_b) + 5, height))
        x0, x1 = int(max(min(x_a, x_b) - 4, 0)), int(min(max(x_a, x_b) + 5, width))
        py = np.arange(y0, y1)[:, None] - y_a
        px = np.arange(x0, x1)[None, :] - x_a
        dy, dx = y_b - y_a, x_b - x_a
        t = np.clip((py * dy + px * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
        distance = np.hypot(py - t * dy, px - t * dx)
        line = value * np.clip(thickness / 2 + 0.5 - distance, 0.0, 1.0)
        canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1], line)


def make_sample(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A procedural complex transmission function, deterministic for `seed`.

    Dense particles of every size and a few thin fibres with sharp edges on a
    textured substrate, and a faint fractal film. Phase and absorption come mostly
    from one projected thickness, as in a real sample, and empty space has phase 0:
    a diffraction pattern cannot tell a patch's mean phase, so a phase background
    that wandered across the sample could not be reconstructed frame by frame.
    Amplitude lies in [0.3, 1], phase in [-pi/2, 0] rad.
    """
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"sample shape must be 2-D and at least 8 x 8, got {shape}")
    shape = (int(shape[0]), int(shape[1]))
    rng = np.random.default_rng(seed)
    film = _fractal_field(shape, 1.3, 1.5, rng)
    texture = _fractal_field(shape, 0.8, 1.0, rng)
    particles = np.zeros(shape, np.float32)
    area = shape[0] * shape[1]
    _stamp_particles(particles, max(3, area // 2500), (1.5, 40.0), rng)
    _stamp_lines(particles, max(1, area // 60000), rng)
    absorption = np.clip(0.75 * particles + 0.25 * texture, 0.0, 1.0)
    amplitude = 1.0 - 0.7 * absorption
    phase = -(np.pi / 2) * np.clip(0.8 * absorption + 0.2 * film, 0.0, 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_probe(size: int, diameter_px: float, defocus: float = 6.0) -> np.ndarray:
    """A defocused focused beam in a size x size window, normalised to sum |p|^2 = 1.

    A circular aperture (the focusing optic's pupil) in Fourier space with a
    quadratic phase of `defocus` radians at its rim, transformed to the sample.
    The pupil radius is chosen so that the spot is about `diameter_px` object
    pixels across: the geometric defocus blur plus the Airy diameter (at
    defocus 0 `diameter_px` is the first dark ring's diameter).
    """
    if size < MIN_DETECTOR:
        raise ValueError(f"probe window must be at least {MIN_DETECTOR} pixels, got {size}")
    if not 0 < diameter_px <= size:
        raise ValueError(f"probe diameter must be in (0, {size}] pixels, got {diameter_px}")
    # Rays through the pupil rim land N*defocus/(pi*R) pixels off axis; the Airy
    # disc adds 1.22*N/R to the diameter.
    pupil_radius = size * (2 * abs(defocus) / np.pi + 1.22) / diameter_px
    if not 1.0 <= pupil_radius <= size / 2 - 1:
        raise ValueError(f"a {diameter_px} pixel probe at defocus {defocus} needs a pupil of "
                         f"radius {pupil_radius:.1f} frequency pixels, outside [1, {size / 2 - 1}]"
                         ": use a larger diameter or less defocus")
    f = np.arange(size) - size // 2
    rho = np.hypot(f[:, None], f[None, :]) / pupil_radius
    # Half-pixel soft rim: a hard binary pupil would alias its edge.
    aperture = np.clip((1.0 - rho) * pupil_radius + 0.5, 0.0, 1.0)
    pupil = aperture * np.exp(1j * defocus * rho**2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil), norm="ortho"))
    probe /= np.sqrt(np.sum(np.abs(probe) ** 2))
    return probe.astype(np.complex64)


def default_probe(size: int) -> np.ndarray:
    """The simulator's own probe: `make_probe(size, size / 2)`, less defocus below 32 pixels
    (where 6 rad would not fit the pupil)."""
    defocus = min(6.0, (np.pi / 2) * ((size / 2 - 1) / 2 - 1.22))
    return make_probe(size, size / 2, defocus)


def default_instrument(detector_size: int = 128, photons: float = 1e6) -> Instrument:
    """The simulated instrument with its own probe."""
    return Instrument(geometry(detector_size), default_probe(detector_size), photons)


def geometry(detector_size: int) -> Geometry:
    """The simulated instrument's geometry for square frames of `detector_size` pixels."""
    distance = OBJECT_PIXEL_SIZE * detector_size * DETECTOR_PIXEL / forward.wavelength(ENERGY_EV)
    return Geometry(ENERGY_EV, distance, DETECTOR_PIXEL, (detector_size, detector_size))


class PtychographySimulator:
    """Diffraction frames of a scan over a sample, and the true patch under each.

    The probe window is `detector_size` object pixels square, so frames are
    detector_size x detector_size. A probe is (n, n) or (modes, n, n) (incoherent
    modes), rescaled to unit total intensity; the default is
    `default_probe(detector_size)`, which overlaps about 60% at 0.25 um steps with 10 nm
    pixels and a 128 pixel detector.
    """

    def __init__(self, detector_size: int = 128, *, photons: float = 1e6,
                 dtype: type | np.dtype = np.uint16, seed: int = 0,
                 sample: np.ndarray | None = None, probe: np.ndarray | None = None,
                 pixel_size: float = OBJECT_PIXEL_SIZE,
                 sample_shape: tuple[int, int] | None = None) -> None:
        if not MIN_DETECTOR <= detector_size <= MAX_DETECTOR:
            raise ValueError(f"detector size must be {MIN_DETECTOR}..{MAX_DETECTOR} pixels, "
                             f"got {detector_size}")
        if not (np.isfinite(photons) and photons > 0):
            raise ValueError(f"photons per frame must be positive and finite, got {photons}")
        try:
            pixel_type = np.dtype(dtype)
        except TypeError as error:
            raise ValueError(f"unsupported pixel type {dtype!r}") from error
        if pixel_type not in PIXEL_TYPES:
            raise ValueError(f"pixel type must be uint8, uint16 or uint32, got {pixel_type}")
        if not pixel_size > 0:
            raise ValueError(f"object pixel size must be positive, got {pixel_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        n = int(detector_size)
        self.detector_size = n
        self.photons = float(photons)
        self.dtype = pixel_type
        self.seed = int(seed)
        self.pixel_size = float(pixel_size)

        if sample is None:
            # Room for a 400-point 0.25 um spiral (radius ~3 um = 300 px) plus the
            # window; independent of the scan so memory stays bounded for big frames.
            side = max(1024, n + 768)
            sample = make_sample(sample_shape or (side, side), self.seed)
        sample = np.asarray(sample, np.complex64)
        if sample.ndim != 2 or 0 in sample.shape:
            raise ValueError(f"sample must be a non-empty 2-D array, got shape {sample.shape}")
        self.sample = sample

        if probe is None:
            probe = default_probe(n)
        probe = np.asarray(probe, np.complex64)
        if probe.ndim == 2:
            probe = probe[None]
        if probe.ndim != 3 or probe.shape[1:] != (n, n):
            raise ValueError(f"probe must be {n} x {n} (or modes x {n} x {n}), "
                             f"got {probe.shape}")
        power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
        if not power > 0:
            raise ValueError("probe has no intensity")
        self.probe = (probe / np.sqrt(power)).astype(np.complex64)  # (modes, n, n)

    def instrument(self) -> Instrument:
        """The instrument these frames come from: what a model for them is made for."""
        return Instrument(geometry(self.detector_size), self.probe, self.photons)

    def illumination(self) -> np.ndarray:
        """(n, n) probe intensity summed over modes."""
        return np.sum(np.abs(self.probe) ** 2, axis=0)

    def positions_to_pixels(self, positions: np.ndarray) -> np.ndarray:
        """(n, 2) int (x, y): top-left sample pixel of the window at each position.

        Position 0 puts the window centre (pixel N//2) on the sample centre
        (pixel shape//2); positions are rounded to the nearest pixel.
        """
        positions = _check_positions(positions)
        centre = np.array([self.sample.shape[1] // 2, self.sample.shape[0] // 2])
        offsets = np.rint(positions / self.pixel_size).astype(np.int64)
        return offsets + centre - self.detector_size // 2

    def object_patches(self, positions: np.ndarray) -> np.ndarray:
        """(n, N, N) complex64 true transmission in the window at each position.

        Only the part of each window that overlaps the sample is copied (one
        slice per frame), the rest is free space, so no padded copy is held.
        """
        corners = self.positions_to_pixels(positions)
        n = self.detector_size
        height, width = self.sample.shape
        patches = np.ones((len(corners), n, n), np.complex64)
        for patch, (x, y) in zip(patches, corners, strict=True):
            x0, x1 = max(x, 0), min(x + n, width)
            y0, y1 = max(y, 0), min(y + n, height)
            if x0 < x1 and y0 < y1:
                patch[y0 - y:y1 - y, x0 - x:x1 - x] = self.sample[y0:y1, x0:x1]
        return patches

    def intensities(self, positions: np.ndarray) -> np.ndarray:
        """(n, N, N) float32 expected counts, direct beam at pixel (N//2, N//2)."""
        return self._intensities_of(self.object_patches(positions))

    def frames(self, positions: np.ndarray,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Noisy frames (n, N, N) of `dtype` and the true patches (n, N, N) complex64.

        Counts above the pixel type's maximum saturate at it. With `rng` None the
        noise of each frame is drawn from a generator seeded by (seed, its pixel
        position): repeatable across calls and independent of how a scan is split
        into calls, and the same point revisited gives the same frame. Pass an
        `rng` for fresh noise.
        """
        positions = _check_positions(positions)
        truth = self.object_patches(positions)
        expected = self._intensities_of(truth)
        ceiling = np.iinfo(self.dtype).max
        out = np.empty(expected.shape, self.dtype)
        if rng is not None:
            for start, stop in self._blocks(len(expected)):
                counts = rng.poisson(expected[start:stop])
                out[start:stop] = np.minimum(counts, ceiling)
        else:
            for i, (x, y) in enumerate(self.positions_to_pixels(positions)):
                # SeedSequence takes non-negative integers only.
                frame_rng = np.random.default_rng([self.seed, int(x) % 2**64, int(y) % 2**64])
                out[i] = np.minimum(frame_rng.poisson(expected[i]), ceiling)
        return out, truth

    def _blocks(self, count: int) -> list[tuple[int, int]]:
        """(start, stop) ranges of frames that keep temporaries to BLOCK_ELEMENTS."""
        per_block = max(1, BLOCK_ELEMENTS // (self.detector_size**2 * len(self.probe)))
        return [(s, min(s + per_block, count)) for s in range(0, count, per_block)]

    def _intensities_of(self, patches: np.ndarray) -> np.ndarray:
        out = np.empty(patches.shape, np.float32)
        for start, stop in self._blocks(len(patches)):
            out[start:stop] = forward.far_field(self.probe, patches[start:stop])
        # Unit-power probe and orthonormal FFT: a transparent sample sums to 1.
        out *= self.photons
        return out


def _check_positions(positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (n, 2), (x, y) in metres; "
                         f"got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions must be finite")
    return positions


def simulator_for(instrument: Instrument, **options) -> PtychographySimulator:
    """A simulator of `instrument`: its probe, flux and object pixel, frames the size of the
    probe's window, in the forward model's orientation (beam centred)."""
    return PtychographySimulator(instrument.window, probe=instrument.probe,
                                 photons=options.pop("photons", instrument.photons),
                                 pixel_size=instrument.object_pixel_size, **options)
