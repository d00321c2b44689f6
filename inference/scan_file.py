"""Recorded scans on disk: frames and positions from CXI (HDF5) or NumPy files.

CXI: frames in `entry_1/data_1/data` (or `entry_1/instrument_1/detector_1/data`),
positions in `entry_1/sample_1/geometry_1/translation`, (N, 3) metres, x then y.
NumPy: an `.npz` with `frames` (N, ny, nx) and `positions` (N, 2) metres, x then y.

Frames are photon counts; processed files often hold them as floating point, read as
`counts.as_counts` says.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ptychoedge.inference import counts

CXI_FRAME_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
CXI_POSITION_PATH = "entry_1/sample_1/geometry_1/translation"


class ScanFileError(ValueError):
    """A recorded scan file that cannot be read, with the reason."""


def load_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, ny, nx) of an integer type and positions (N, 2) in metres."""
    path = Path(path)
    if not path.is_file():
        raise ScanFileError(f"{path}: no such file")
    if path.suffix == ".npz":
        frames, positions = _load_npz(path)
    elif path.suffix in (".cxi", ".h5", ".hdf5"):
        frames, positions = _load_cxi(path)
    else:
        raise ScanFileError(f"{path}: expected a .cxi, .h5 or .npz file")
    return _checked(path, frames, positions)


def save_scan(path: str | Path, frames: np.ndarray, positions: np.ndarray) -> None:
    """Write a scan that `load_scan` reads back: CXI for .cxi/.h5, NumPy for .npz."""
    path = Path(path)
    if path.suffix == ".npz":
        np.savez(path, frames=frames, positions=positions)
        return
    with h5py.File(path, "w") as f:
        f.attrs["cxi_version"] = 150
        f.create_dataset(CXI_FRAME_PATHS[0], data=frames, chunks=(1, *frames.shape[1:]))
        translation = np.zeros((len(positions), 3))
        translation[:, :2] = positions
        f.create_dataset(CXI_POSITION_PATH, data=translation).attrs["units"] = "m"


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"frames", "positions"} - set(data.files)
            if missing:
                raise ScanFileError(f"{path}: missing array(s) {', '.join(sorted(missing))}")
            return data["frames"], data["positions"]
    except (OSError, ValueError) as error:
        if isinstance(error, ScanFileError):
            raise
        raise ScanFileError(f"{path}: not a readable .npz file ({error})") from error


def _load_cxi(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            frame_path = next((p for p in CXI_FRAME_PATHS if p in f), None)
            if frame_path is None:
                raise ScanFileError(f"{path}: no frames at {' or '.join(CXI_FRAME_PATHS)}")
            if CXI_POSITION_PATH not in f:
                raise ScanFileError(f"{path}: no positions at {CXI_POSITION_PATH}")
            return f[frame_path][()], f[CXI_POSITION_PATH][()][:, :2]
    except OSError as error:
        raise ScanFileError(f"{path}: not a readable HDF5 file ({error})") from error


def as_counts(frames: np.ndarray, source: str) -> np.ndarray:
    """`counts.as_counts`, a refusal naming `source`."""
    try:
        return counts.as_counts(frames)
    except counts.NotCounts as error:
        raise ScanFileError(f"{source}: {error}") from error


def _checked(path: Path, frames: np.ndarray,
             positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if frames.ndim != 3 or 0 in frames.shape:
        raise ScanFileError(f"{path}: frames must be (N, ny, nx), got {frames.shape}")
    frames = as_counts(frames, str(path))
    if positions.shape != (len(frames), 2):
        raise ScanFileError(
            f"{path}: {len(frames)} frames but positions of shape {positions.shape}")
    return frames, positions.astype(np.float64)
