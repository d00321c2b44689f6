"""The instrument a model belongs to: its probe, its geometry, its detector's orientation.

Read from a CXI file at the paths the field uses (energy in J at
`entry_1/instrument_1/source_1/energy`, `entry_1/instrument_1/detector_1/distance`,
`x_pixel_size` and `y_pixel_size` in m, the probe at
`entry_1/instrument_1/source_1/illumination`, and where the file has one the detector's
mask at `entry_1/instrument_1/detector_1/mask`, nonzero for a pixel that measures
nothing: a module gap, a dead or hot pixel), or built from numbers and files (`.npy`; a
mask also from a CXI or NeXus NXmx file, `read_mask`). A
scan whose file has no mask has one where its frames show it: the pixels that are no
count (the pixel type's maximum, or below 0) in every frame.

The probe is complex, (n, n) or (modes, n, n), sampled at the object pixel size of an
n-pixel detector window: wavelength x distance / (n x detector pixel). It is kept with
total intensity 1; `photons` is what a frame collects with no sample in the beam.

Orientation maps a frame as it arrives to the forward model's: transpose, then flip
rows (y), then flip columns (x); the direct beam then sits at (`beam_x`, `beam_y`)
pixels, the frame's centre (nx // 2, ny // 2) when not given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ptychoedge.inference import forward
from ptychoedge.inference.scan_file import ScanFileError, as_counts

ELECTRON_VOLT = 1.602176634e-19  # J
SOURCE = "entry_1/instrument_1/source_1"
DETECTOR = "entry_1/instrument_1/detector_1"
PROBE_PATH = f"{SOURCE}/illumination"
ENERGY_PATH = f"{SOURCE}/energy"
DISTANCE_PATH = f"{DETECTOR}/distance"
PIXEL_PATHS = (f"{DETECTOR}/x_pixel_size", f"{DETECTOR}/y_pixel_size")
MASK_PATH = f"{DETECTOR}/mask"
FRAME_PATHS = ("entry_1/data_1/data", f"{DETECTOR}/data")
SAMPLED = 512  # frames read to judge a scan's flux and the pixels that never count
# What a real instrument can have: anything outside is a unit mistake.
ENERGY_RANGE_EV = (100.0, 100e3)
DISTANCE_RANGE_M = (1e-3, 100.0)
PIXEL_RANGE_M = (1e-7, 1e-2)


class InstrumentError(ValueError):
    """An instrument description that cannot be used, with the reason."""


def _in_range(name: str, value: float, bounds: tuple[float, float], unit: str,
              hint: str = "") -> float:
    value = float(value)
    if not (np.isfinite(value) and bounds[0] <= value <= bounds[1]):
        raise InstrumentError(f"{name} {value:g} {unit} is outside {bounds[0]:g}..{bounds[1]:g} "
                              f"{unit}{hint}")
    return value


@dataclass(frozen=True)
class Geometry:
    """Photon energy (eV), sample-detector distance (m), detector pixel (m), frame (ny, nx)."""

    energy_ev: float
    distance_m: float
    pixel_size_m: float
    frame_shape: tuple[int, int]

    def __post_init__(self) -> None:
        _in_range("photon energy", self.energy_ev, ENERGY_RANGE_EV, "eV",
                  " (CXI stores the energy in J)")
        _in_range("detector distance", self.distance_m, DISTANCE_RANGE_M, "m")
        _in_range("detector pixel", self.pixel_size_m, PIXEL_RANGE_M, "m")
        shape = tuple(int(n) for n in self.frame_shape)
        if len(shape) != 2 or min(shape) < 8:
            raise InstrumentError(f"frame shape must be (ny, nx) of at least 8 pixels, got "
                                  f"{self.frame_shape}")
        object.__setattr__(self, "frame_shape", shape)

    @property
    def wavelength_m(self) -> float:
        return forward.wavelength(self.energy_ev)

    def object_pixel_size(self, detector_pixels: int) -> float:
        """Object pixel (m) seen through a window of `detector_pixels` detector pixels."""
        return forward.object_pixel_size(self.energy_ev, self.distance_m, self.pixel_size_m,
                                         detector_pixels)


@dataclass(frozen=True)
class Orientation:
    """How an arriving frame maps onto the forward model's frame (see the module doc)."""

    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False
    beam_x: float | None = None  # direct beam, pixels of the oriented frame
    beam_y: float | None = None

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """(n, ny, nx) frames as they arrive -> as the forward model has them (views)."""
        if self.transpose:
            frames = frames.swapaxes(-1, -2)
        if self.flip_y:
            frames = frames[..., ::-1, :]
        if self.flip_x:
            frames = frames[..., :, ::-1]
        return frames

    def beam(self, oriented_shape: tuple[int, int]) -> tuple[int, int]:
        """(x, y) pixel of the direct beam in an oriented frame of (ny, nx) pixels."""
        ny, nx = oriented_shape[-2:]
        x = nx // 2 if self.beam_x is None else int(round(self.beam_x))
        y = ny // 2 if self.beam_y is None else int(round(self.beam_y))
        return x, y


def checked_probe(probe: np.ndarray, source: str = "probe") -> np.ndarray:
    """(modes, n, n) complex64 with total intensity 1, or InstrumentError with the reason."""
    probe = np.asarray(probe)
    if not np.iscomplexobj(probe):
        raise InstrumentError(f"{source}: a probe must be complex (amplitude and phase), got "
                              f"{probe.dtype}")
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or probe.shape[-1] != probe.shape[-2] or probe.shape[-1] < 8:
        raise InstrumentError(f"{source}: a probe must be (n, n) or (modes, n, n) with n >= 8, "
                              f"got shape {probe.shape}")
    if not np.all(np.isfinite(probe)):
        raise InstrumentError(f"{source}: the probe has non-finite values")
    power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    if not power > 0:
        raise InstrumentError(f"{source}: the probe has no intensity")
    return (probe / np.sqrt(power)).astype(np.complex64)


def checked_mask(mask: np.ndarray, frame_shape: tuple[int, int], source: str = "mask"
                 ) -> np.ndarray:
    """(ny, nx) bool, True where a pixel measures nothing, or InstrumentError with the
    reason: integers or booleans (nonzero: bad, as CXI has it) of the frames' shape."""
    mask = np.asarray(mask)
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise InstrumentError(f"{source}: a detector mask holds integers or booleans (nonzero: "
                              f"a pixel that measures nothing), got {mask.dtype}")
    if mask.shape != tuple(frame_shape):
        raise InstrumentError(f"{source}: a mask of shape {mask.shape} for frames of "
                              f"{tuple(frame_shape)}")
    mask = mask != 0
    if mask.all():
        raise InstrumentError(f"{source}: the mask leaves no pixel")
    return mask


def read_mask(path: str | Path) -> np.ndarray:
    """A detector mask file as it is stored (nonzero: a pixel that measures nothing): a
    `.npy` array, or an HDF5 file holding a CXI mask (`MASK_PATH`) or NeXus NXmx
    `pixel_mask` datasets (an Eiger master file's; several, one per threshold, are
    combined: a pixel bad in any is masked). `checked_mask` checks it against the frames."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InstrumentError(f"{path}: not a readable .npy mask ({error})") from error
    try:
        with h5py.File(path, "r") as f:
            if MASK_PATH in f:
                return f[MASK_PATH][()]
            found: list[np.ndarray] = []
            f.visititems(lambda name, item: found.append(item[()]) if (
                name.rsplit("/", 1)[-1] == "pixel_mask" and isinstance(item, h5py.Dataset)
                and item.ndim == 2) else None)
    except OSError as error:
        raise InstrumentError(f"{path}: neither a .npy mask nor a readable HDF5 file "
                              f"({error})") from error
    if not found:
        raise InstrumentError(f"{path}: no detector mask: looked for {MASK_PATH} (CXI) and "
                              "pixel_mask datasets (NeXus NXmx)")
    if len({mask.shape for mask in found}) > 1:
        raise InstrumentError(f"{path}: its pixel_mask datasets differ in shape "
                              f"({', '.join(str(mask.shape) for mask in found)})")
    return np.logical_or.reduce([mask != 0 for mask in found])


def fourier_crop(probe: np.ndarray, size: int) -> np.ndarray:
    """The probe seen through the central `size` detector pixels, at their object pixel.

    Its far field is exactly the central size x size pixels of the probe's own, so the
    intensity it loses is what falls outside the window (kept out: not renormalised).
    """
    n = probe.shape[-1]
    if size == n:
        return probe
    spectrum = np.fft.fftshift(np.fft.fft2(probe, norm="ortho"), axes=(-2, -1))
    top = n // 2 - size // 2
    window = spectrum[..., top:top + size, top:top + size]
    return np.fft.ifft2(np.fft.ifftshift(window, axes=(-2, -1)), norm="ortho").astype(
        np.complex64)


@dataclass
class Instrument:
    """Geometry, probe (modes, n, n) at the n-pixel window's object pixel, flux, orientation,
    and the detector's mask (frames as they arrive, True: a pixel that measures nothing)."""

    geometry: Geometry
    probe: np.ndarray
    photons: float
    orientation: Orientation = field(default_factory=Orientation)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.probe = checked_probe(self.probe)
        if self.mask is not None:
            self.mask = checked_mask(self.mask, self.geometry.frame_shape)
        if not (np.isfinite(self.photons) and self.photons > 0):
            raise InstrumentError(f"photons per frame must be positive, got {self.photons}")
        self.photons = float(self.photons)
        ny, nx = self.oriented_frame_shape
        if self.window > min(ny, nx):
            raise InstrumentError(f"the probe is sampled for a {self.window}-pixel window, larger "
                                  f"than the {nx}x{ny} frames")

    @property
    def window(self) -> int:
        """Detector pixels across the window the probe is sampled for."""
        return self.probe.shape[-1]

    @property
    def modes(self) -> int:
        return self.probe.shape[0]

    @property
    def oriented_frame_shape(self) -> tuple[int, int]:
        ny, nx = self.geometry.frame_shape
        return (nx, ny) if self.orientation.transpose else (ny, nx)

    @property
    def object_pixel_size(self) -> float:
        """Object pixel (m) of the probe as given."""
        return self.geometry.object_pixel_size(self.window)

    def model_probe(self, crop_size: int, binning: int) -> np.ndarray:
        """The probe over a network's field: `crop_size` detector pixels binned by `binning`.

        Cropping the detector keeps the field and coarsens the object pixel (a Fourier
        crop of the probe); binning keeps the object pixel and shrinks the field (the
        central crop_size / binning pixels of that probe).
        """
        if crop_size > self.window:
            raise InstrumentError(f"a {crop_size}-pixel crop needs a probe sampled for at least "
                                  f"that window; this one is for {self.window} pixels")
        probe = fourier_crop(self.probe, crop_size)
        size = crop_size // binning
        top = crop_size // 2 - size // 2
        probe = probe[..., top:top + size, top:top + size]
        # A binned pixel's centre lies (b - 1) / 2 detector pixels past the frequency the
        # smaller field's FFT samples there: a phase ramp shifts the far field onto it.
        shift = (binning - 1) / (2 * binning)  # network pixels
        ramp = np.exp(-2j * np.pi * shift * np.arange(size) / size)
        return (probe * ramp[:, None] * ramp[None, :]).astype(np.complex64)


def _dataset(f: h5py.File, path: str, source: Path) -> np.ndarray:
    if path not in f:
        raise InstrumentError(f"{source}: no {path}")
    return f[path][()]


def _scalar(f: h5py.File, path: str, source: Path) -> float:
    value = np.asarray(_dataset(f, path, source), dtype=np.float64)
    if value.size != 1:
        raise InstrumentError(f"{source}: {path} must be one number, got shape {value.shape}")
    return float(value.ravel()[0])


def read_cxi(path: str | Path, *, photons: float | None = None,
             orientation: Orientation = Orientation(),
             mask: np.ndarray | None = None) -> Instrument:
    """The instrument of a CXI file (a scan, or an instrument alone: no frames).

    `photons` (counts per frame with no sample) defaults to the probe's own total
    intensity (CXI writers scale it to the counts) where that is within a factor of two
    of the brightest frames' total over the probe's window (99th percentile), and to the
    latter otherwise (a probe in other units).
    Without frames, the frames are taken to be the probe's window. `mask`, where given,
    replaces the file's.
    """
    path = Path(path)
    if not path.is_file():
        raise InstrumentError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            energy_j = _scalar(f, ENERGY_PATH, path)
            distance = _scalar(f, DISTANCE_PATH, path)
            x_pixel, y_pixel = (_scalar(f, p, path) for p in PIXEL_PATHS)
            probe = checked_probe(_dataset(f, PROBE_PATH, path), str(path))
            frames = next((f[p] for p in FRAME_PATHS if p in f), None)
            if frames is None:  # an instrument file: frames of the probe's window
                frame_shape = probe.shape[1:]
            elif frames.ndim != 3 or 0 in frames.shape:
                raise InstrumentError(f"{path}: frames must be (N, ny, nx), got {frames.shape}")
            else:
                frame_shape = frames.shape[1:]
            if mask is None and MASK_PATH in f:
                mask = checked_mask(f[MASK_PATH][()], frame_shape, f"{path}: {MASK_PATH}")
            # up to SAMPLED frames, evenly spread, stand for the scan where it must be judged
            sample = (as_counts(frames[::max(1, len(frames) // SAMPLED)], str(path))
                      if frames is not None and (mask is None or photons is None) else None)
            if mask is None and sample is not None:
                mask = never_counted(sample)
            if photons is None:
                stored = _stored_power(f, path)
                if sample is not None:
                    brightest = _brightest_frames(sample, probe.shape[-1], orientation, mask)
                    # a probe scaled to the counts (as CXI writers do) is exact; the
                    # brightest frames fall short behind a sample that absorbs everywhere
                    if not 0.5 * brightest <= stored <= 2 * brightest:
                        stored = brightest
                photons = stored
    except OSError as error:
        raise InstrumentError(f"{path}: not a readable HDF5 file ({error})") from error
    except ScanFileError as error:
        raise InstrumentError(str(error)) from None
    if not np.isclose(x_pixel, y_pixel, rtol=0.01):
        raise InstrumentError(f"{path}: detector pixels of {x_pixel:g} x {y_pixel:g} m: only "
                              "square pixels are supported")
    geometry = Geometry(energy_j / ELECTRON_VOLT, distance, x_pixel, frame_shape)
    return Instrument(geometry, probe, photons, orientation, mask)


def _stored_power(f: h5py.File, path: Path) -> float:
    probe = f[PROBE_PATH][()]
    return float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))


def never_counted(frames: np.ndarray) -> np.ndarray | None:
    """The pixels that are no count in every one of `frames` (n, ny, nx): at the pixel
    type's maximum or below 0, what a detector writes in its gaps and dead pixels (and a
    pixel saturated throughout reads); None where there are none, or frames not of an
    integer type."""
    if not np.issubdtype(frames.dtype, np.integer):
        return None
    never = np.all(frames == np.iinfo(frames.dtype).max, axis=0)
    if np.issubdtype(frames.dtype, np.signedinteger):
        never |= np.all(frames < 0, axis=0)
    return never if never.any() else None


def _brightest_frames(frames: np.ndarray, window: int, orientation: Orientation,
                      mask: np.ndarray | None) -> float:
    """99th percentile of the frames' counts inside the probe's window, the masked pixels
    left out."""
    sample = np.asarray(frames, dtype=np.float64)
    if mask is not None:
        sample[:, mask] = 0.0
    sample = orientation.apply(sample)
    x, y = orientation.beam(sample.shape)
    top, left = y - window // 2, x - window // 2
    totals = sample[:, max(top, 0):top + window, max(left, 0):left + window].sum(axis=(1, 2))
    return float(np.percentile(totals, 99))


def put_instrument(f: h5py.File, instrument: Instrument) -> None:
    """Write `instrument` into the open CXI file `f` at the paths read_cxi reads: ENERGY_PATH
    (J), DISTANCE_PATH and PIXEL_PATHS (m), each with its `units`, PROBE_PATH, the probe
    scaled so that sum |P|^2 is the photons per frame, and MASK_PATH (1: a pixel that
    measures nothing) where the instrument has a mask."""
    geometry = instrument.geometry
    for name, value, units in ((ENERGY_PATH, geometry.energy_ev * ELECTRON_VOLT, "J"),
                               (DISTANCE_PATH, geometry.distance_m, "m"),
                               *((path, geometry.pixel_size_m, "m") for path in PIXEL_PATHS)):
        f[name] = value
        f[name].attrs["units"] = units
    f[PROBE_PATH] = instrument.probe * np.float32(np.sqrt(instrument.photons))
    if instrument.mask is not None:
        f[MASK_PATH] = instrument.mask.astype(np.uint32)


def write_cxi(path: str | Path, instrument: Instrument, frames: np.ndarray | None = None,
              positions: np.ndarray | None = None, *, sample: np.ndarray | None = None,
              sample_pixel_size: float | None = None) -> None:
    """A CXI scan: frames (N, ny, nx) as they arrive, positions (N, 2) m (x, y), the
    instrument (the probe scaled to the counts), and the true object if known; without
    frames, an instrument file (what `ptychoedge train --instrument` reads).

    Paths and units (CXI 1.5): frames at entry_1/data_1/data (counts); the positions at
    entry_1/sample_1/geometry_1/translation, (N, 3) m, x then y then 0; ENERGY_PATH (J),
    DISTANCE_PATH and PIXEL_PATHS (m), each with its `units` attribute; PROBE_PATH, the
    probe scaled so that sum |P|^2 is the photons per frame. The object (complex
    transmission) at entry_1/image_1/data with x_pixel_size and y_pixel_size (m;
    `sample_pixel_size`, default the probe's object pixel) and `origin`, its pixel
    (x, y) under scan position 0: the centre (nx // 2, ny // 2), as the simulator
    places it and as readers take it when a file has no origin.
    """
    scan = frames is not None
    frames = np.asarray(frames if scan else np.zeros((0, 1, 1)))
    positions = np.asarray(positions if scan else np.zeros((0, 2)), np.float64)
    if frames.ndim != 3 or positions.shape != (len(frames), 2):
        raise InstrumentError(f"frames (N, ny, nx) and positions (N, 2) expected, got "
                              f"{frames.shape} and {positions.shape}")
    if sample is not None:
        sample = np.asarray(sample, np.complex64)
        if sample.ndim != 2:
            raise InstrumentError(f"the object must be (ny, nx), got shape {sample.shape}")
    image = "entry_1/image_1"
    with h5py.File(path, "w") as f:
        def put(name: str, value, units: str) -> None:
            f[name] = value
            f[name].attrs["units"] = units

        f.attrs["cxi_version"] = 150
        if scan:
            f.create_dataset(FRAME_PATHS[0], data=frames, chunks=(1, *frames.shape[1:]))
            translation = np.zeros((len(positions), 3))
            translation[:, :2] = positions
            put("entry_1/sample_1/geometry_1/translation", translation, "m")
        put_instrument(f, instrument)
        if sample is not None:
            pixel = sample_pixel_size or instrument.object_pixel_size
            f[f"{image}/data"] = sample
            put(f"{image}/x_pixel_size", pixel, "m")
            put(f"{image}/y_pixel_size", pixel, "m")
            f[f"{image}/origin"] = np.array([sample.shape[1] // 2, sample.shape[0] // 2])
