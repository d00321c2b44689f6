"""Probes of real X-ray optics, in physical units, and measured probes from files.

Conventions: a probe is as inference/instrument.py has it (checked by its
`checked_probe`): complex64 (modes, n, n) sampled at the object pixel size dx of an
n-pixel detector window (inference/forward.py: `object_pixel_size`), the direct beam
(the optical axis) at pixel (n//2, n//2), indexed [row = y, column = x]. Modes are
mutually incoherent; the total intensity, sum over modes of sum |p|^2, is 1 (the
simulator multiplies by the photons per frame). The presets are at the simulated
instrument's photon energy (sim/physics.py: ENERGY_EV).

Fields are computed on a grid of m >= 2n pixels at dx and the centre n x n is kept
(then renormalised), so a periodic FFT never wraps the probe's tails onto itself.
The optics' far field (the pupil) is built in the spatial-frequency plane of that
grid and propagated by the angular spectrum, which is exact for any distance the
grid samples. Wave convention exp(i(kz - wt)); positive defocus puts the sample
downstream of the focus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from ptychoedge.inference import forward
from ptychoedge.inference.instrument import PROBE_PATH, InstrumentError, checked_probe
from ptychoedge.sim import physics

PROBE_FILE_SUFFIXES = (".npy", ".cxi", ".h5", ".hdf5")
MAX_GRID = 8192  # pixels on a side of the grid a probe is computed on
# Source points of a partially coherent ensemble: a square grid over +-3 rms.
SOURCE_GRID_POINTS = 9
SOURCE_GRID_HALF_WIDTH = 3.0


class ProbeError(ValueError):
    """A probe that cannot be used, with the reason."""


def _wavelength(energy_ev: float) -> float:
    """forward.wavelength of a positive photon energy (eV), or ProbeError."""
    if not 0 < energy_ev < np.inf:
        raise ProbeError(f"photon energy must be positive, got {energy_ev} eV")
    return forward.wavelength(energy_ev)


def zone_plate_probe(n: int, dx: float, *, energy_ev: float, diameter: float,
                     outer_zone: float, stop_diameter: float = 0.0, defocus: float = 0.0,
                     modes: int = 1, source_rms: float = 0.0) -> np.ndarray:
    """The probe of a Fresnel zone plate (first order) with a central stop.

    diameter, outer_zone (outermost zone width drn), stop_diameter, defocus (distance
    of the sample from the focus, either sign) and source_rms are in metres; the focal
    length is diameter x drn / wavelength and the numerical aperture wavelength / (2 drn).
    The pupil is the annulus the stop leaves, uniformly lit; its far field sets the
    focal field, whose Airy first dark ring (no stop) has radius 0.61 wavelength / NA
    = 1.22 drn. An order-sorting aperture is assumed to pass the first order only.

    modes > 1: the source has a Gaussian image of rms `source_rms` in the focal plane;
    each source point shifts the focus, and the ensemble is reduced to its `modes`
    strongest orthogonal modes.
    """
    lam = _wavelength(energy_ev)
    _check_window(n, dx)
    if not (outer_zone > 0 and diameter > 0):
        raise ProbeError(f"zone plate diameter and outer zone width must be positive, got "
                         f"{diameter} m and {outer_zone} m")
    if not 0 <= stop_diameter < diameter:
        raise ProbeError(f"central stop diameter must be in [0, {diameter}) m, got "
                         f"{stop_diameter} m")
    if outer_zone <= dx:
        raise ProbeError(f"a zone plate of {outer_zone * 1e9:.1f} nm outer zones focuses into "
                         f"angles this detector does not reach: the object pixel "
                         f"({dx * 1e9:.1f} nm) must be smaller than the outer zone width")
    if not np.isfinite(defocus):
        raise ProbeError(f"defocus must be finite, got {defocus}")
    focal_length = diameter * outer_zone / lam
    footprint = diameter * abs(defocus) / focal_length
    if footprint > n * dx:
        raise ProbeError(f"at {defocus * 1e3:g} mm defocus the beam is {footprint * 1e6:.2f} um "
                         f"across, larger than the {n * dx * 1e6:.2f} um window")
    # At least 32 frequency pixels across the pupil radius keep its rim smooth.
    m = _grid_size(max(2 * n, int(np.ceil(64 * outer_zone / dx))))
    q = _frequencies(m, dx)
    q_radius = np.hypot(q[:, None], q[None, :])
    pupil_radius = 1.0 / (2 * outer_zone)  # = (diameter / 2) / (wavelength x f)
    stop_radius = pupil_radius * stop_diameter / diameter
    dq = 1.0 / (m * dx)
    # Soft one-frequency-pixel rims: a binary pupil would alias its edges.
    pupil = (np.clip((pupil_radius - q_radius) / dq + 0.5, 0.0, 1.0)
             * np.clip((q_radius - stop_radius) / dq + 0.5, 0.0, 1.0))
    spectrum = pupil * _angular_spectrum(q_radius, lam, defocus)

    def field(shift_x: float, shift_y: float) -> np.ndarray:
        tilt = np.exp(-2j * np.pi * (q[None, :] * shift_x + q[:, None] * shift_y))
        return _to_window(np.fft.ifft2(np.fft.ifftshift(spectrum * tilt)), n)

    return _with_modes(field, modes, source_rms, "source_rms")


def pinhole_probe(n: int, dx: float, *, energy_ev: float, diameter: float, distance: float,
                  modes: int = 1, source_angle_rms: float = 0.0) -> np.ndarray:
    """A plane wave through a circular pinhole of `diameter` (m), `distance` (m) upstream.

    Near field: the aperture's Fresnel fringes, about diameter + wavelength x distance
    / diameter across. modes > 1: the source subtends a Gaussian of rms
    `source_angle_rms` (rad); each source point tilts the wave on the pinhole.
    """
    lam = _wavelength(energy_ev)
    _check_window(n, dx)
    if not 0 < diameter < n * dx:
        raise ProbeError(f"pinhole diameter must be in (0, {n * dx * 1e6:.2f} um), the "
                         f"window, got {diameter * 1e6:g} um")
    if not 0 <= distance < np.inf:
        raise ProbeError(f"pinhole distance must be >= 0 m, got {distance}")
    spread = diameter + 2 * lam * distance / diameter
    if spread > n * dx:
        raise ProbeError(f"{distance * 1e3:g} mm behind a {diameter * 1e6:g} um pinhole the "
                         f"beam is about {spread * 1e6:.2f} um across, larger than the "
                         f"{n * dx * 1e6:.2f} um window")
    # The propagator's chirp is sampled while wavelength x distance <= m dx^2.
    m = _grid_size(max(2 * n, int(np.ceil(lam * distance / dx**2))))
    x = (np.arange(m) - m // 2) * dx
    r = np.hypot(x[:, None], x[None, :])
    aperture = np.clip((diameter / 2 - r) / dx + 0.5, 0.0, 1.0)
    q = _frequencies(m, dx)
    propagator = np.fft.ifftshift(_angular_spectrum(np.hypot(q[:, None], q[None, :]),
                                                    lam, distance))

    def field(angle_x: float, angle_y: float) -> np.ndarray:
        tilt = np.exp(2j * np.pi * (x[None, :] * angle_x + x[:, None] * angle_y) / lam)
        wave = np.fft.ifftshift(aperture * tilt)
        return _to_window(np.fft.ifft2(np.fft.fft2(wave) * propagator), n)

    return _with_modes(field, modes, source_angle_rms, "source_angle_rms")


def check_probe(probe: np.ndarray, n: int | None = None, what: str = "probe") -> np.ndarray:
    """instrument.checked_probe (complex, finite, (n, n) or (modes, n, n), some intensity;
    normalised to total intensity 1), with n given: n x n, the frames' size. ProbeError
    with the reason otherwise."""
    try:
        probe = checked_probe(probe, what)
    except InstrumentError as error:
        raise ProbeError(str(error)) from error
    if n is not None and probe.shape[1:] != (n, n):
        raise ProbeError(f"{what}: is {probe.shape[1]} x {probe.shape[2]} but the frames are "
                         f"{n} x {n}")
    return probe


def load_probe(path: str | Path, n: int | None = None) -> np.ndarray:
    """A measured probe from `.npy` or from a CXI/HDF5 file's illumination, checked.

    `.npy`: complex (n, n) or (modes, n, n). CXI (.cxi/.h5/.hdf5): the same at
    instrument.PROBE_PATH (entry_1/instrument_1/source_1/illumination). Sampled at the
    frames' object pixel; n given: refused unless n x n.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            probe = np.load(path, allow_pickle=False)
        elif path.suffix in PROBE_FILE_SUFFIXES[1:]:
            with h5py.File(path, "r") as f:
                if PROBE_PATH not in f:
                    raise ProbeError(f"{path}: no probe at {PROBE_PATH}")
                probe = f[PROBE_PATH][()]
        else:
            raise ProbeError(f"{path}: expected a .npy, .cxi, .h5 or .hdf5 file")
    except (OSError, ValueError) as error:
        if isinstance(error, ProbeError):
            raise
        raise ProbeError(f"{path}: not a readable probe file ({error})") from error
    return check_probe(probe, n, str(path))


def incoherent_modes(fields: np.ndarray, weights: np.ndarray, modes: int) -> np.ndarray:
    """The `modes` strongest orthogonal modes of an incoherent ensemble of fields.

    fields (M, n, n), each of unit intensity, weights (M,) the source points'
    intensities. The ensemble's mutual intensity sum_j w_j f_j f_j* is diagonalised
    (an SVD of the weighted fields): the returned modes are orthogonal, strongest
    first, with intensities equal to their eigenvalues, rescaled to total 1.
    """
    if modes < 1:
        raise ProbeError(f"modes must be at least 1, got {modes}")
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    stacked = (fields.reshape(len(fields), -1).astype(np.complex128)
               * np.sqrt(weights)[:, None])
    _, singular, rows = np.linalg.svd(stacked, full_matrices=False)
    if modes > len(singular) or singular[modes - 1] <= 1e-6 * singular[0]:
        raise ProbeError(f"the source ensemble has fewer than {modes} significant modes: "
                         "use a larger source or fewer modes")
    kept = singular[:modes, None] * rows[:modes]
    kept /= np.sqrt(np.sum(singular[:modes] ** 2))
    return kept.reshape(modes, *fields.shape[1:]).astype(np.complex64)


def mode_weights(probe: np.ndarray) -> np.ndarray:
    """(modes,) fraction of the intensity in each mode."""
    power = np.sum(np.abs(probe.astype(np.complex128)) ** 2, axis=(-2, -1))
    return power / power.sum()


def encircled_diameter(probe: np.ndarray, dx: float, fraction: float = 0.9) -> float:
    """Diameter (m) of the disc about the intensity centroid holding `fraction` of it."""
    intensity = np.sum(np.abs(probe.astype(np.complex128)) ** 2, axis=0)
    y, x = np.indices(intensity.shape)
    total = intensity.sum()
    cy, cx = np.sum(y * intensity) / total, np.sum(x * intensity) / total
    radius = np.hypot(y - cy, x - cx).ravel()
    order = np.argsort(radius)
    inside = np.cumsum(intensity.ravel()[order]) / total
    return 2 * float(radius[order][np.searchsorted(inside, fraction)]) * dx


# Presets of the simulated nanoprobe (10 keV): a 160 um zone plate with 30 nm outer
# zones (f = 38.7 mm, NA 2.1 mrad) and a 60 um central stop.
ZONE_PLATE = {"energy_ev": physics.ENERGY_EV, "diameter": 160e-6, "outer_zone": 30e-9,
              "stop_diameter": 60e-6}
ZONE_PLATE_DEFOCUS = 150e-6  # m: a cone 2 NA x 150 um = 0.62 um across at the sample
# Fresnel number (radius^2 / (wavelength x distance)) 3: near field, a bright axis.
PINHOLE = {"energy_ev": physics.ENERGY_EV, "diameter": 0.6e-6, "distance": 240e-6}
PROBE_KINDS = {
    "default": "the simulator's own probe: a defocused ideal lens, half the window across",
    "zoneplate": "a 160 um zone plate, 30 nm outer zones, 60 um central stop, in focus "
                 "(10 keV)",
    "zoneplate-defocus": "the same zone plate 0.15 mm out of focus: an annular beam about "
                         "0.6 um across",
    "pinhole": "a 0.6 um pinhole 0.24 mm upstream of the sample (10 keV)",
}
PRESET_SOURCE_RMS = 10e-9  # m, the source's image at the focus when modes > 1
PRESET_SOURCE_ANGLE_RMS = 10e-6  # rad, the source seen from the pinhole when modes > 1


def describe(kind: str) -> str:
    """One line saying what a probe kind is (a preset's name or a file)."""
    if kind in PROBE_KINDS:
        return f"{kind}: {PROBE_KINDS[kind]}"
    return f"{kind}: a measured probe from this file"


def named_probe(kind: str, n: int, dx: float, modes: int = 1) -> np.ndarray:
    """A preset probe (see PROBE_KINDS) or a probe file, as (modes, n, n) at `dx` (m).

    A file's probe is used as it is: it must already be sampled at `dx` and its
    mode count is its own (`modes` applies to presets only).
    """
    if kind == "default":
        if modes != 1:
            raise ProbeError("the default probe is fully coherent: use another kind for modes")
        return check_probe(physics.default_probe(n))
    if kind == "zoneplate":
        return zone_plate_probe(n, dx, **ZONE_PLATE, modes=modes, source_rms=PRESET_SOURCE_RMS)
    if kind == "zoneplate-defocus":
        return zone_plate_probe(n, dx, **ZONE_PLATE, defocus=ZONE_PLATE_DEFOCUS, modes=modes,
                                source_rms=PRESET_SOURCE_RMS)
    if kind == "pinhole":
        return pinhole_probe(n, dx, **PINHOLE, modes=modes,
                             source_angle_rms=PRESET_SOURCE_ANGLE_RMS)
    if Path(kind).suffix in PROBE_FILE_SUFFIXES:
        return load_probe(kind, n)
    raise ProbeError(f"unknown probe {kind!r}: use one of {', '.join(PROBE_KINDS)} or a "
                     ".npy/.cxi file")


def _check_window(n: int, dx: float) -> None:
    if not physics.MIN_DETECTOR <= n <= physics.MAX_DETECTOR:
        raise ProbeError(f"probe window must be {physics.MIN_DETECTOR}..{physics.MAX_DETECTOR} "
                         f"pixels, got {n}")
    if not 0 < dx < np.inf:
        raise ProbeError(f"object pixel size must be positive, got {dx} m")


def _grid_size(at_least: int) -> int:
    m = 1 << max(int(at_least) - 1, 1).bit_length()
    if m > MAX_GRID:
        raise ProbeError(f"this probe needs a {m} pixel grid to be sampled; the limit is "
                         f"{MAX_GRID}: use a larger object pixel or a smaller distance")
    return m


def _frequencies(m: int, dx: float) -> np.ndarray:
    """Spatial frequencies (1/m) of an m-pixel grid at dx, zero at index m//2."""
    return (np.arange(m) - m // 2) / (m * dx)


def _angular_spectrum(q: np.ndarray, lam: float, distance: float) -> np.ndarray:
    """Free-space transfer function over `distance`, without the common phase kz."""
    # kz - k = -2 pi lam q^2 / (1 + sqrt(1 - lam^2 q^2)), without cancellation.
    cosine = np.sqrt(np.clip(1.0 - (lam * q) ** 2, 0.0, None))
    return np.exp(-2j * np.pi * distance * lam * q**2 / (1.0 + cosine))


def _to_window(field: np.ndarray, n: int) -> np.ndarray:
    """The centre n x n of a field whose optical axis is at pixel 0 (FFT order)."""
    m = field.shape[0]
    centred = np.fft.fftshift(field)
    top = m // 2 - n // 2
    window = centred[top:top + n, top:top + n]
    return window / np.sqrt(np.sum(np.abs(window) ** 2))


def _with_modes(field: Callable[[float, float], np.ndarray], modes: int, rms: float,
                name: str) -> np.ndarray:
    """(modes, n, n): the coherent field(0, 0), or the modes of a Gaussian source."""
    if modes < 1:
        raise ProbeError(f"modes must be at least 1, got {modes}")
    if modes == 1:
        return check_probe(field(0.0, 0.0))
    if not 0 < rms < np.inf:
        raise ProbeError(f"{modes} modes need a positive {name}, got {rms}")
    offsets = np.linspace(-SOURCE_GRID_HALF_WIDTH, SOURCE_GRID_HALF_WIDTH,
                          SOURCE_GRID_POINTS) * rms
    points = [(sx, sy) for sy in offsets for sx in offsets]
    weights = np.array([np.exp(-(sx**2 + sy**2) / (2 * rms**2)) for sx, sy in points])
    fields = np.stack([field(sx, sy) for sx, sy in points])
    return incoherent_modes(fields, weights, modes)
