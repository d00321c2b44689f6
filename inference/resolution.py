"""What the frames resolve: two half-scans refined apart, compared ring by ring.

The refinement (refine.py) fits every frame, its counting noise too. Where the object's
contrast is weak, that noise is most of what the image shows at fine scales: a weak
absorber's amplitude carries a tenth of its phase's contrast, and the noise is the same in
both. Two refinements of the even and the odd frames, each alone, share the object and not
the noise; their Fourier ring correlation (FRC) says, scale by scale, how much of the image
is the object (van Heel and Schatz 2005, J. Struct. Biol. 151, 250):

- the resolution: the finest half-period at which the halves still agree above the
  half-bit threshold (the object's, complex, as ptychography reports it, and the
  amplitude's alone);
- the refined amplitude filtered to it: a Wiener filter whose weight at each ring is the
  whole scan's signal-to-noise share there, 2 FRC / (1 + FRC) (the whole scan has twice a
  half's signal-to-noise ratio), rings whose FRC is within noise of zero dropped.

The phase is left as it is: its contrast is high, and a wrapped phase cannot be filtered.
The halves start from a flat object with the refinement's probe, held: a start drawn from
all the frames (the network's image) would share their noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ptychoedge.inference.instrument import Instrument, Orientation
from ptychoedge.inference.refine import Refinement, refine

RINGS = 64  # from zero to the Nyquist frequency of the canvas
TAPER = 4.0  # px: the edge of the compared region softened, so that it adds no rings
# each half-scan's time, as a share of the refinement's: a third gave the same filter as
# the whole time (case (ii)'s Siemens star, 30 s refined: 0.939 against 0.940 in amplitude)
HALVES_SHARE = 1 / 3
FEWEST_FRAMES = 4  # two frames a half, at least
SIGNIFICANT = 2.0  # a ring's FRC counts from this many times its noise, 1 / sqrt(pixels)


def with_half_scans(seconds: float) -> float:
    """The whole time of a refinement of `seconds` and its two half-scans."""
    return seconds * (1 + 2 * HALVES_SHARE)


@dataclass
class Resolution:
    """The two halves' ring correlations on a refinement's canvas."""

    pixel_size: float  # m, the canvas's
    frequencies: np.ndarray  # (RINGS,) cycles per m, each ring's centre
    object_frc: np.ndarray  # (RINGS,) of the complex objects
    amplitude_frc: np.ndarray  # (RINGS,) of their amplitudes
    pixels: np.ndarray  # (RINGS,) independent pixels in each ring
    seconds: float  # spent on the halves

    def half_bit(self) -> np.ndarray:
        """(RINGS,) the half-bit threshold: the FRC of one bit of information in two
        halves, for each ring's pixels."""
        root = 1.0 / np.sqrt(np.maximum(self.pixels, 1.0))
        return (0.2071 + 1.9102 * root) / (1.2071 + 0.9102 * root)

    def half_period(self, frc: np.ndarray) -> float:
        """The finest half-period (m) resolved: where `frc` first falls below the half-bit
        threshold beyond its highest ring (a texture of one scale, a labyrinth's, has
        little at the coarsest scales); the canvas pixel where it never does."""
        peak = int(np.argmax(frc[1:])) + 1
        below = np.nonzero(frc[peak:] < self.half_bit()[peak:])[0]
        if not len(below):
            return self.pixel_size
        return float(1.0 / (2.0 * self.frequencies[below[0] + peak]))

    def filtered_amplitude(self, amplitude: np.ndarray, lit: np.ndarray) -> np.ndarray:
        """`amplitude` (on the canvas the halves were placed on) Wiener-filtered by the
        amplitude's FRC (beyond the Nyquist circle, by its last ring's); 0 where `lit` is
        false, as the refinement's images are."""
        frc = np.clip(self.amplitude_frc, 0.0, 1.0)
        frc[frc < SIGNIFICANT / np.sqrt(np.maximum(self.pixels, 1.0))] = 0.0
        weight = 2.0 * frc / (1.0 + frc)
        weight[0] = 1.0
        mean = float(amplitude[lit].mean())
        filled = np.where(lit, amplitude, mean) - mean
        rings = np.minimum(_ring_index(amplitude.shape), RINGS - 1)
        filtered = np.fft.ifft2(np.fft.fft2(filled) * weight[rings])
        return ((filtered.real + mean) * lit).astype(np.float32)

    def figures(self) -> dict:
        """The half-periods resolved (m), the object's and the amplitude's, and the time the
        halves took."""
        return {"object_half_period": self.half_period(self.object_frc),
                "amplitude_half_period": self.half_period(self.amplitude_frc),
                "halves_seconds": self.seconds}

    def report(self) -> dict:
        """The figures, and the curves by ring."""
        return self.figures() | {"frequencies": self.frequencies.tolist(),
                                 "object_frc": self.object_frc.tolist(),
                                 "amplitude_frc": self.amplitude_frc.tolist()}

    def save_plot(self, path: Path, title: str) -> None:
        """The two curves against the half-period, with the half-bit threshold."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        nm = 1e9 / (2.0 * self.frequencies)
        figure, axis = plt.subplots(figsize=(7, 4))
        for name, frc in (("object (complex)", self.object_frc),
                          ("amplitude", self.amplitude_frc)):
            axis.plot(nm, frc, label=f"{name}: {self.half_period(frc) * 1e9:.0f} nm")
        axis.plot(nm, self.half_bit(), "k--", label="half-bit threshold")
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.set_xlabel("half-period (nm)")
        axis.set_ylabel("Fourier ring correlation")
        axis.set_ylim(-0.2, 1.05)
        axis.legend()
        axis.set_title(title)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)


def half_scans(frames: np.ndarray, positions: np.ndarray, instrument: Instrument,
               orientation: Orientation, refinement: Refinement, seconds: float,
               progress: Callable[[Refinement], None] | None = None,
               most_sweeps: int | None = None) -> Resolution:
    """Refine the even and the odd frames apart for `seconds` (or `most_sweeps`) each, with
    `refinement`'s probe held, and compare them on its canvas where all three are lit."""
    if len(frames) < FEWEST_FRAMES:
        raise ValueError(f"{len(frames)} frames: two half-scans need at least {FEWEST_FRAMES}")
    held = replace(instrument, probe=refinement.probe)
    halves, spent = [], 0.0
    for first in (0, 1):
        half = refine(frames[first::2], positions[first::2], held, orientation, seconds,
                      progress=progress, most_sweeps=most_sweeps)
        spent += half.seconds
        halves.append(_on_canvas(half, refinement))
    (one, one_lit), (other, other_lit) = halves
    return compared(one, other, refinement.lit & one_lit & other_lit, refinement.pixel_size,
                    spent)


def compared(one: np.ndarray, other: np.ndarray, region: np.ndarray, pixel_size: float,
             seconds: float = 0.0) -> Resolution:
    """Two complex images of one object from independent halves of its data, compared
    ring by ring within `region` (their constant phase, which is free, set alike)."""
    other = other * np.exp(-1j * np.angle(np.sum((other * np.conj(one))[region])))
    taper = _blurred(region.astype(float), TAPER) * region
    index = _ring_index(region.shape)
    share = float(np.sum(taper ** 2) / taper.size)
    pixels = np.bincount(index.ravel(), minlength=RINGS)[:RINGS] * share
    frequencies = (np.arange(RINGS) + 0.5) * (0.5 / RINGS) / pixel_size
    return Resolution(pixel_size, frequencies, _ring_correlation(one, other, taper, index),
                      _ring_correlation(np.abs(one), np.abs(other), taper, index), pixels,
                      seconds)


def _on_canvas(half: Refinement, whole: Refinement) -> tuple[np.ndarray, np.ndarray]:
    """A half's object and lit region moved onto the whole scan's canvas (by their
    origins, the pixel of scan position 0); unlit where the half did not reach."""
    obj = np.ones(whole.obj.shape, np.complex64)
    lit = np.zeros(whole.obj.shape, bool)
    dx, dy = whole.origin[0] - half.origin[0], whole.origin[1] - half.origin[1]
    rows = slice(max(0, dy), min(obj.shape[0], dy + half.obj.shape[0]))
    cols = slice(max(0, dx), min(obj.shape[1], dx + half.obj.shape[1]))
    source = (slice(rows.start - dy, rows.stop - dy), slice(cols.start - dx, cols.stop - dx))
    obj[rows, cols] = half.obj[source]
    lit[rows, cols] = half.lit[source]
    return obj, lit


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` convolved with a Gaussian of `sigma` pixels, zero beyond its edges."""
    pad = int(np.ceil(3 * sigma))
    padded = np.pad(image, pad)
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    blurred = np.fft.irfft2(np.fft.rfft2(padded) * kernel, s=padded.shape)
    return blurred[pad:pad + image.shape[0], pad:pad + image.shape[1]]


def _ring_index(shape: tuple[int, ...]) -> np.ndarray:
    """Each Fourier pixel's ring; beyond the Nyquist circle (the corners), RINGS and up."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return (np.hypot(fx, fy) / 0.5 * RINGS).astype(int)


def _ring_correlation(a: np.ndarray, b: np.ndarray, taper: np.ndarray,
                      index: np.ndarray) -> np.ndarray:
    """(RINGS,) Re sum A B* / sqrt(sum |A|^2 sum |B|^2) over each ring, of the images'
    departures from their means within `taper`, tapered."""
    weight = float(taper.sum()) or 1.0
    spectra = [np.fft.fft2((image - np.sum(image * taper) / weight) * taper)
               for image in (a, b)]
    rings = index.ravel()
    size = int(rings.max()) + 1

    def summed(values: np.ndarray) -> np.ndarray:
        return np.bincount(rings, values.ravel(), size)[:RINGS]

    cross = summed((spectra[0] * np.conj(spectra[1])).real)
    powers = summed(np.abs(spectra[0]) ** 2) * summed(np.abs(spectra[1]) ** 2)
    return cross / np.sqrt(np.maximum(powers, 1e-30))
