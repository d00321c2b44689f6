"""Physics refinement: the network's stitched image, corrected until it explains the frames.

The network answers each frame in about a millisecond, but not exactly; ePIE (the
instrument's probe with all its modes, on every pixel of the probe's detector window: the
exact forward model of forward.py) corrects the object frame by frame. Its first sweeps
take a step larger where the probe is dim than ePIE's (the relaxed step of rPIE, Maiden,
Johnson and Li 2017), growing to ePIE's: it finds the sample in a few sweeps, and then
fits the frames' noise no more than ePIE does. Started from the network's mosaic its
first sweeps are truer than from a flat object (benchmarks/fidelity.py measures both).

A real beamline's probe is never known exactly: it drifts, and a probe from another
scan or from the optics' design is off. With `probe_from` set, the probe (every mode)
is refined too from that sweep on, by ePIE's update with the roles swapped (at PROBE_STEP
of its usual step). Its
power stays the instrument's (the object's scale is then the frames'), and its modes
are kept orthogonal, strongest first. Before `probe_from` the object is refined alone,
so that the probe learns from an object that already explains the frames roughly.

The refined object lies on a canvas at the instrument's object pixel (the probe's own
sampling), which is the network's where its crop is the whole window and an integer
fraction of it otherwise.

The probe is the scan's own where its file has one (a CXI with an illumination), else
the model's. The network's image is a start only where its frames fit the model (their
median residual within the model's MINOR alarm limit, as the residual guard judges): a
model made for another probe or sample draws an image that misleads the refinement, so
it then starts flat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptychoedge.inference.instrument import Instrument, InstrumentError, Orientation, read_cxi
from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.mosaic import Mosaic
from ptychoedge.inference.preprocess import Preprocessing

BLOCK = 256  # frames cropped at a time
PROBE_FROM = 5  # sweeps of the object alone before the probe is refined too
# ePIE's probe step, a fifth of the usual: a full step fits the probe to each frame's
# noise (the Fourier error rose by half with an exact probe); at 0.2 an exact probe stays
# (0.9998) and one 30 um out of focus is found again (benchmarks/fidelity.py)
PROBE_STEP = 0.2
# The object's step, 1 / ((1 - r) |P|^2 + r max |P|^2), starts at r = RELAXED (larger where
# the probe is dim than ePIE's 1 / max |P|^2) and grows e-fold every RELAX_VISITS visits of
# the probe to a pixel, to ePIE's (r = 1). Early sweeps then correct the whole field at
# once, late ones fit the noise no more than ePIE: on 300-frame scans (about 20 visits a
# sweep) it reached in 8 s what ePIE reached in 20-40 s; r held at 0.1 stalled at a higher
# Fourier error. Counted in visits, not sweeps: a scan that passes each point several
# times fits each frame's noise as often (MODELS.md).
RELAXED = 0.1
RELAX_VISITS = 1000.0


@dataclass
class Refinement:
    """The object being refined, and how far it got."""

    obj: np.ndarray  # complex64 canvas at the instrument's object pixel
    probe: np.ndarray  # complex64 (modes, n, n), power 1: the instrument's, or refined
    lit: np.ndarray  # bool: where the probe lit the canvas well (the mosaic's coverage rule)
    origin: tuple[int, int]  # canvas pixel (x, y) of scan position 0
    pixel_size: float  # m
    started_from: str  # "the network's mosaic" or "a flat object"
    sweeps: int = 0
    # the Fourier error of each sweep, sum (|F| - sqrt(I))^2 / sum I over its frames
    errors: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """Amplitude and phase (float32), 0 where the probe did not light the canvas well."""
        return ((np.abs(self.obj) * self.lit).astype(np.float32),
                (np.angle(self.obj) * self.lit).astype(np.float32))


def scan_instrument(scan: Path, manifest: Manifest) -> Instrument:
    """The instrument to refine `scan` with: its own where its file holds a probe, else
    `manifest`'s; seen in the orientation the model sees the detector in."""
    if scan.suffix in (".cxi", ".h5", ".hdf5"):
        try:
            return read_cxi(scan, orientation=manifest.preprocessing.orientation)
        except InstrumentError:
            pass  # no probe in the file: the model's
    return manifest.instrument


def network_start(mosaic: Mosaic, residuals: np.ndarray, manifest: Manifest
                  ) -> tuple[Mosaic | None, str]:
    """The network's mosaic as the refinement's start, or None where its frames do not fit
    the model; and why, in words."""
    residual = float(np.nanmedian(residuals))
    minor, _ = manifest.alarm_limits()
    if not residual <= minor:
        return None, (f"the frames do not fit the model (residual {residual:.3f} above "
                      f"{minor:.3f}): its image would mislead")
    return mosaic, f"the frames fit the model (residual {residual:.3f})"


def refine(frames: np.ndarray, positions: np.ndarray, instrument: Instrument,
           orientation: Orientation, seconds: float, start: Mosaic | None = None,
           progress: Callable[[Refinement], None] | None = None,
           most_sweeps: int | None = None, seed: int = 0,
           probe_from: int | None = None, relaxed: float = RELAXED) -> Refinement:
    """ePIE sweeps, each in a random frame order, for `seconds` (at least one sweep, at
    most `most_sweeps`) on `frames` (n, ny, nx) counts at `positions` (n, 2) m, from
    `start` (a network's mosaic) where it fits; the probe too from sweep `probe_from`
    (0: from the first; None: never); the object's step relaxed from `relaxed` (1: ePIE's
    throughout); `progress` is told after each sweep."""
    n, pixel = instrument.window, instrument.object_pixel_size
    window = Preprocessing(n, n, orientation=orientation, mask=instrument.mask)
    measured = _measured_moduli(frames, window, instrument.photons)
    # a masked pixel measured nothing: there the exit wave keeps its own modulus
    kept = window.measured()
    if kept is not None:
        kept = np.fft.ifftshift(kept)
        measured[:, ~kept] = 0.0
    spots = np.rint(np.asarray(positions) / pixel).astype(int)
    origin = -spots.min(axis=0) + n // 2
    corners = origin + spots - n // 2
    shape = tuple(int(v) for v in (spots.max(axis=0) - spots.min(axis=0) + n)[::-1])
    zero = (int(origin[0]), int(origin[1]))
    obj, started_from = _starting_object(shape, zero, pixel, start)
    probe = np.array(instrument.probe, np.complex64)
    intensity = np.sum(np.abs(probe) ** 2, axis=0)
    light = np.zeros(shape)
    for x, y in corners:
        light[y:y + n, x:x + n] += intensity
    refinement = Refinement(obj, probe, light >= 0.5 * intensity.mean(), zero, pixel,
                            started_from)

    # how many times the probe's footprint covers a lit pixel in one sweep
    visits = float(light[refinement.lit].mean() / intensity.mean())
    total_measured = float(np.sum(np.square(measured))) or 1.0
    power = float(np.sum(intensity))
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    while not refinement.sweeps or (refinement.seconds < seconds
                                    and refinement.sweeps != most_sweeps):
        probe_too = probe_from is not None and refinement.sweeps >= probe_from
        conjugate = np.conj(probe)
        lit_by = np.sum(np.abs(probe) ** 2, axis=0)
        r = min(1.0, relaxed * np.exp(refinement.sweeps * visits / RELAX_VISITS))
        step = (1.0 / ((1.0 - r) * lit_by + r * lit_by.max())).astype(np.float32)
        error = 0.0
        for j in rng.permutation(len(corners)):
            x, y = corners[j]
            patch = obj[y:y + n, x:x + n]
            exit_waves = probe * patch
            far = np.fft.fft2(exit_waves, norm="ortho")
            modulus = np.sqrt(np.sum(far.real ** 2 + far.imag ** 2, axis=0))
            misfit = modulus - measured[j]
            ratio = measured[j] / (modulus + 1e-12)
            if kept is not None:
                misfit, ratio = misfit * kept, np.where(kept, ratio, np.float32(1.0))
            error += float(np.sum(np.square(misfit)))
            change = np.fft.ifft2(far * ratio, norm="ortho") - exit_waves
            if probe_too:
                seen = np.conj(patch) * np.float32(PROBE_STEP
                                                   / (np.max(np.abs(patch) ** 2) or 1.0))
                patch += step * np.sum(conjugate * change, axis=0)
                probe += seen * change
                conjugate = np.conj(probe)
            else:
                patch += step * np.sum(conjugate * change, axis=0)
        if probe_too:
            probe[:] = _orthogonal_modes(probe, power)
        refinement.sweeps += 1
        refinement.errors.append(error / total_measured)
        refinement.seconds = time.perf_counter() - started
        if progress:
            progress(refinement)
    return refinement


def probe_overlap(probe: np.ndarray, other: np.ndarray) -> float:
    """|<p, q>| / (|p| |q|) of the two probes' strongest modes: 1 for the same probe."""
    p, q = (modes[np.argmax(np.sum(np.abs(modes) ** 2, axis=(1, 2)))].ravel()
            for modes in (np.asarray(probe), np.asarray(other)))
    return float(abs(np.vdot(p, q)) / (np.linalg.norm(p) * np.linalg.norm(q) or 1.0))


def _orthogonal_modes(probe: np.ndarray, power: float) -> np.ndarray:
    """The probe's modes made orthogonal (strongest first, the same mixed state) and
    scaled to `power` in all."""
    modes = probe.reshape(len(probe), -1)
    if len(probe) > 1:
        _, values, right = np.linalg.svd(modes, full_matrices=False)
        modes = values[:, None] * right
    modes = modes * np.float32(np.sqrt(power / np.sum(np.abs(modes) ** 2)))
    return modes.reshape(probe.shape).astype(np.complex64)


def _measured_moduli(frames: np.ndarray, window: Preprocessing, photons: float) -> np.ndarray:
    """(frames, n, n) float32 square roots of the counts per incident photon over the
    `window`'s oriented, beam-centred n pixels, zero frequency first (as the FFT has it); a
    block at a time, so that a ring of many frames is held once more, not three times."""
    n = window.crop_size
    measured = np.empty((len(frames), n, n), np.float32)
    for i in range(0, len(frames), BLOCK):
        counts = window.binned(frames[i:i + BLOCK], check_beam=False)
        measured[i:i + BLOCK] = np.fft.ifftshift(np.sqrt(np.clip(counts / photons, 0, None)),
                                                 axes=(-2, -1))
    return measured


def _starting_object(shape: tuple[int, int], origin: tuple[int, int], pixel: float,
                     start: Mosaic | None) -> tuple[np.ndarray, str]:
    """The canvas to refine: the mosaic upsampled to `pixel` and placed so that scan
    position 0 falls on `origin`, or a flat object where there is none (or where its
    pixel is no integer multiple of `pixel`). Where no patch reached: the mosaic's mean."""
    factor = round(start.pixel_size / pixel) if start is not None and start.patches else 0
    if factor < 1 or abs(factor * pixel - start.pixel_size) > 1e-3 * pixel:
        return np.ones(shape, np.complex64), "a flat object"
    amplitude, phase = start.images()
    placed = amplitude > 0
    image = np.where(placed, amplitude * np.exp(1j * phase), 0)
    mean = image[placed].mean()
    image = np.kron(image, np.ones((factor, factor)))
    placed = np.kron(placed, np.ones((factor, factor), bool))
    # a patch averaged down by `factor` (Preprocessing.object_patches) has in its centre
    # pixel the `factor` fine pixels from scan position 0 on
    offset = np.array(start.position_to_pixel(0.0, 0.0)) * factor - np.array(origin)
    obj = np.full(shape, mean, np.complex64)
    top, left = max(0, -offset[1]), max(0, -offset[0])
    bottom = min(shape[0], image.shape[0] - offset[1])
    right = min(shape[1], image.shape[1] - offset[0])
    if bottom > top and right > left:
        source = (slice(top + offset[1], bottom + offset[1]),
                  slice(left + offset[0], right + offset[0]))
        window = obj[top:bottom, left:right]
        window[placed[source]] = image[source][placed[source]]
    return obj, "the network's mosaic"
