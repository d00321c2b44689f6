"""A simulated scan written as CXI with its instrument, as the field exchanges scans.

Paths and units (CXI 1.5):
- entry_1/data_1/data: frames (N, ny, nx), counts, direct beam at (ny//2, nx//2);
- entry_1/sample_1/geometry_1/translation: (N, 3) metres, x then y then 0; position 0
  puts the frame's window centre on the object's pixel (ny//2, nx//2) of image_1;
- entry_1/instrument_1/source_1/energy: photon energy in J;
- entry_1/instrument_1/detector_1/distance, x_pixel_size, y_pixel_size: metres;
- entry_1/instrument_1/source_1/illumination: the probe, complex (modes, n, n) at the
  object pixel size, scaled so that sum |P|^2 is the photons per frame;
- entry_1/image_1/data: the true object (complex transmission), with x_pixel_size and
  y_pixel_size (m) beside it.
`sim/replay.py` reads the frames and positions back (`ptychoedge sim --replay`).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

ELECTRON_VOLT = 1.602176634e-19  # J
SOURCE = "entry_1/instrument_1/source_1"
DETECTOR = "entry_1/instrument_1/detector_1"
IMAGE = "entry_1/image_1"


def write_scan(path: str | Path, frames: np.ndarray, positions: np.ndarray, *,
               probe: np.ndarray, photons: float, energy_ev: float, distance: float,
               detector_pixel: float, sample: np.ndarray | None = None,
               sample_pixel_size: float | None = None) -> None:
    """Write frames (N, ny, nx), positions (N, 2) m (x, y), the instrument and the object.

    probe: (n, n) or (modes, n, n) with total intensity 1 (scaled by photons here).
    sample_pixel_size (m) is required with `sample`.
    """
    frames = np.asarray(frames)
    positions = np.asarray(positions, np.float64)
    probe = np.asarray(probe, np.complex64)
    if probe.ndim == 2:
        probe = probe[None]
    if frames.ndim != 3 or positions.shape != (len(frames), 2):
        raise ValueError(f"frames (N, ny, nx) and positions (N, 2) expected, got "
                         f"{frames.shape} and {positions.shape}")
    if sample is not None and not (sample_pixel_size and sample_pixel_size > 0):
        raise ValueError("a sample needs its pixel size (m)")
    translation = np.zeros((len(positions), 3))
    translation[:, :2] = positions
    with h5py.File(path, "w") as f:
        f.attrs["cxi_version"] = 150
        f.create_dataset("entry_1/data_1/data", data=frames, chunks=(1, *frames.shape[1:]))
        _with_units(f, "entry_1/sample_1/geometry_1/translation", translation, "m")
        _with_units(f, f"{SOURCE}/energy", energy_ev * ELECTRON_VOLT, "J")
        _with_units(f, f"{DETECTOR}/distance", distance, "m")
        _with_units(f, f"{DETECTOR}/x_pixel_size", detector_pixel, "m")
        _with_units(f, f"{DETECTOR}/y_pixel_size", detector_pixel, "m")
        f[f"{SOURCE}/illumination"] = probe * np.float32(np.sqrt(photons))
        if sample is not None:
            f[f"{IMAGE}/data"] = np.asarray(sample, np.complex64)
            _with_units(f, f"{IMAGE}/x_pixel_size", sample_pixel_size, "m")
            _with_units(f, f"{IMAGE}/y_pixel_size", sample_pixel_size, "m")


def _with_units(f: h5py.File, path: str, value, units: str) -> None:
    f[path] = value
    f[path].attrs["units"] = units
