"""Recorded scans: round trips through both formats, and clear errors for bad files."""

import h5py
import numpy as np
import pytest

from ptychoedge.inference.scan_file import ScanFileError, load_scan, save_scan


@pytest.mark.parametrize("suffix", [".npz", ".cxi", ".h5"])
def test_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 2**32 - 1, size=(4, 8, 12), dtype=np.uint32)
    positions = rng.normal(size=(4, 2)) * 1e-6
    path = tmp_path / f"scan{suffix}"
    save_scan(path, frames, positions)
    loaded_frames, loaded_positions = load_scan(path)
    np.testing.assert_array_equal(loaded_frames, frames)
    np.testing.assert_array_equal(loaded_positions, positions)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda p: p / "missing.npz", "no such file"),
    (lambda p: (p / "scan.txt").write_text("x") and p / "scan.txt", "expected a .cxi"),
    (lambda p: (p / "junk.npz").write_bytes(b"junk") and p / "junk.npz", "not a readable"),
    (lambda p: (p / "junk.cxi").write_bytes(b"junk") and p / "junk.cxi", "not a readable"),
    (lambda p: _npz(p / "a.npz", frames=np.zeros((2, 4, 4), np.uint16)), "positions"),
    (lambda p: _npz(p / "b.npz", frames=np.zeros((2, 4, 4), complex),
                    positions=np.zeros((2, 2))), "photon counts"),
    (lambda p: _npz(p / "f.npz", frames=np.full((2, 4, 4), 0.3), positions=np.zeros((2, 2))),
     "mostly fractions of a count"),
    (lambda p: _npz(p / "c.npz", frames=np.zeros((4, 4), np.uint16), positions=np.zeros((4, 2))),
     "(N, ny, nx)"),
    (lambda p: _npz(p / "d.npz", frames=np.zeros((3, 4, 4), np.uint16),
                    positions=np.zeros((2, 2))), "3 frames"),
])
def test_bad_files_raise_a_clear_error(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ScanFileError, match=None) as error:
        load_scan(path)
    assert reason in str(error.value) and str(path.name) in str(error.value)


def test_cxi_without_positions(tmp_path):
    path = tmp_path / "frames_only.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = np.zeros((2, 4, 4), np.uint16)
    with pytest.raises(ScanFileError, match="no positions"):
        load_scan(path)


def test_pickled_npz_is_not_loaded(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, frames=np.array([object()]), positions=np.zeros((1, 2)))
    with pytest.raises(ScanFileError):
        load_scan(path)
