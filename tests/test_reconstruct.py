"""Offline tools on recorded scans: `ptychoedge reconstruct` and `ptychoedge evaluate --scan`
on small CXI files, and bad scans refused with the reason."""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest
from conftest import ptychoedge

from ptychoedge.inference.evaluate import evaluate_scan
from ptychoedge.inference.instrument import read_cxi, write_cxi
from ptychoedge.inference.manifest import load_manifest
from ptychoedge.inference.refine import PROBE_FROM, probe_overlap
from ptychoedge.pvdb.processors import AGREES, EXPLAINS, VARIES
from ptychoedge.sim import physics
from ptychoedge.sim.samples import named_sample


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """40 frames of the shipped model's own instrument over an unseen sample, with its truth."""
    instrument = load_manifest("ptychonn-default").instrument
    simulator = physics.simulator_for(instrument, seed=11, sample_shape=(384, 384))
    positions = physics.fermat_spiral_positions(40, 0.25e-6)
    frames, _ = simulator.frames(positions)
    path = tmp_path_factory.mktemp("scan") / "scan.cxi"
    write_cxi(path, instrument, frames, positions, sample=simulator.sample,
              sample_pixel_size=simulator.pixel_size)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ptychoedge(*args), capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_reconstruct_writes_the_stitched_object_and_the_residuals(scan, tmp_path):
    result = run("reconstruct", str(scan), "--out", str(tmp_path), "--backend", "torch")
    assert result.returncode == 0, result.stderr
    assert "40 of 40 frames reconstructed" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    manifest = load_manifest("ptychonn-default")
    assert report["reconstructed"] == 40 and report["refused"] == {}
    residuals = np.load(tmp_path / "residuals.npy")
    assert residuals.shape == (40,) and np.all(np.isfinite(residuals))
    with h5py.File(tmp_path / "reconstruction.cxi") as f:
        image = f["entry_1/image_1/data"][()]
        assert np.iscomplexobj(image) and image.ndim == 2
        assert f["entry_1/image_1/x_pixel_size"][()] == pytest.approx(manifest.object_pixel_size)
        origin = f["entry_1/image_1/origin"][()]
    # the object's centre of mass of illumination sits around scan position 0
    assert 0 < origin[0] < image.shape[1] and 0 < origin[1] < image.shape[0]
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000
    # the images tell these frames apart (the fit guard's second figure)
    assert report["frames_over_noise"] > VARIES and report["explained"] > EXPLAINS
    assert "the images explain" in result.stdout and "warning" not in result.stdout


@pytest.mark.integration
def test_reconstruct_warns_when_the_images_do_not_tell_the_frames_apart(tmp_path):
    """A labyrinth, which the shipped network never learnt: the residual stays low, but
    the network answers nearly one image for every frame."""
    instrument = load_manifest("ptychonn-default").instrument
    simulator = physics.simulator_for(instrument, seed=3, sample=named_sample(
        "labyrinth", (384, 384), 3))
    positions = physics.fermat_spiral_positions(40, 0.25e-6)
    write_cxi(tmp_path / "scan.cxi", instrument, simulator.frames(positions)[0], positions)
    result = run("reconstruct", str(tmp_path / "scan.cxi"), "--out", str(tmp_path / "out"),
                 "--backend", "torch")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames_over_noise"] > VARIES and report["explained"] < EXPLAINS
    assert f"warning: the images explain under {EXPLAINS:.0%}" in result.stdout


@pytest.mark.integration
def test_reconstruct_refines_the_network_image_through_the_physics(scan, tmp_path):
    result = run("reconstruct", str(scan), "--out", str(tmp_path), "--refine", "3")
    assert result.returncode == 0, result.stderr
    assert "refined from the network's mosaic (the frames fit the model" in result.stdout
    assert "refining: sweep" in result.stderr  # progress
    refined = json.loads((tmp_path / "report.json").read_text())["refined"]
    first, last = refined["fourier_error"]
    assert refined["sweeps"] >= 2 and last < first
    with h5py.File(tmp_path / "refined.cxi") as f:
        image = f["entry_1/image_1/data"][()]
        pixel = f["entry_1/image_1/x_pixel_size"][()]
    known = load_manifest("ptychonn-default").instrument
    assert pixel == pytest.approx(known.object_pixel_size)
    assert np.iscomplexobj(image) and np.ptp(np.angle(image[np.abs(image) > 0])) > 0.1
    # the probe was refined with it: the file is an instrument file, the probe near the
    # one the scan was made with (exact here), at the scan's flux
    assert refined["probe_refined_from_sweep"] == PROBE_FROM
    assert 0.99 < refined["probe_overlap_with_given"] <= 1.0
    assert "the probe refined from sweep" in result.stdout
    instrument = read_cxi(tmp_path / "refined.cxi")
    assert instrument.geometry.energy_ev == pytest.approx(known.geometry.energy_ev)
    assert instrument.photons == pytest.approx(known.photons, rel=1e-3)
    assert probe_overlap(instrument.probe, known.probe) == pytest.approx(
        refined["probe_overlap_with_given"], abs=1e-4)
    # two half-scans say what the frames resolve, and the amplitude is filtered to it
    resolution = refined["resolution"]
    assert (known.object_pixel_size <= resolution["object_half_period"]
            <= resolution["amplitude_half_period"])
    assert "each half-scan: sweep" in result.stderr and "resolution (two half-scans" in \
        result.stdout
    with h5py.File(tmp_path / "filtered.cxi") as f:
        filtered = f["entry_1/image_1/data"][()]
    lit = np.abs(image) > 0
    assert filtered.shape == image.shape and np.allclose(np.angle(filtered[lit]),
                                                         np.angle(image[lit]), atol=1e-5)
    assert np.std(np.abs(filtered[lit])) < np.std(np.abs(image[lit]))
    assert (tmp_path / "resolution.png").stat().st_size > 10_000


@pytest.mark.integration
def test_reconstruct_can_hold_the_probe_fixed(scan, tmp_path):
    result = run("reconstruct", str(scan), "--out", str(tmp_path), "--refine", "1",
                 "--fixed-probe")
    assert result.returncode == 0, result.stderr
    refined = json.loads((tmp_path / "report.json").read_text())["refined"]
    assert refined["probe_refined_from_sweep"] is None
    assert refined["probe_overlap_with_given"] == pytest.approx(1.0, abs=1e-6)
    assert "the probe refined" not in result.stdout


@pytest.mark.integration
def test_a_scan_too_short_to_halve_is_refined_and_says_it_is_not_resolved(tmp_path):
    instrument = load_manifest("ptychonn-default").instrument
    simulator = physics.simulator_for(instrument, seed=12, sample_shape=(384, 384))
    positions = physics.fermat_spiral_positions(3, 0.25e-6)
    write_cxi(tmp_path / "scan.cxi", instrument, simulator.frames(positions)[0], positions)
    result = run("reconstruct", str(tmp_path / "scan.cxi"), "--out", str(tmp_path / "out"),
                 "--refine", "1")
    assert result.returncode == 0, result.stderr
    assert "not resolved: 3 frames refined, and two half-scans need at least 4" in result.stderr
    refined = json.loads((tmp_path / "out" / "report.json").read_text())["refined"]
    assert "resolution" not in refined and (tmp_path / "out" / "refined.cxi").is_file()
    assert not (tmp_path / "out" / "filtered.cxi").exists()


@pytest.mark.integration
def test_a_negative_refinement_time_is_refused(scan, tmp_path):
    result = run("reconstruct", str(scan), "--out", str(tmp_path), "--refine", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--refine takes seconds" in result.stderr
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_evaluate_scores_a_scan_against_its_object_and_beside_a_flat_image(scan, tmp_path):
    report = evaluate_scan("ptychonn-default", None, scan, None, tmp_path)
    for name in ("amplitude", "phase"):
        assert report[f"{name}_correlation"] > 0.5
        assert report[f"flat_{name}_correlation"] == 0.0
        assert report[f"{name}_psnr"] > report[f"flat_{name}_psnr"] - 3
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    # The score can fail: the same frames against another sample's object
    other = tmp_path / "other.npz"
    np.savez(other, object=physics.make_sample((384, 384), seed=12), pixel_size=1e-8)
    wrong = evaluate_scan("ptychonn-default", None, scan, other, tmp_path / "wrong")
    assert wrong["phase_correlation"] < 0.5 * report["phase_correlation"]


@pytest.mark.integration
def test_a_reference_of_another_pixel_size_is_refused(scan, tmp_path):
    odd = tmp_path / "odd.npz"
    np.savez(odd, object=np.ones((300, 300), np.complex64), pixel_size=7e-9)
    result = run("evaluate", "--scan", str(scan), "--reference", str(odd), "--out",
                 str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "does not divide" in result.stderr


@pytest.mark.integration
def test_reconstruct_warns_when_neighbouring_images_disagree(tmp_path):
    """The same frames at their own positions, then each at the next frame's (a stage read
    one frame late): each frame fits either way, but only the first images agree."""
    instrument = load_manifest("ptychonn-default").instrument
    simulator = physics.simulator_for(instrument, seed=11, sample_shape=(768, 768))
    positions = physics.fermat_spiral_positions(120, 0.25e-6)
    frames = simulator.frames(positions)[0]
    reports = {}
    for name, placed in (("right", positions), ("late", np.roll(positions, -1, axis=0))):
        write_cxi(tmp_path / f"{name}.cxi", instrument, frames, placed)
        result = run("reconstruct", str(tmp_path / f"{name}.cxi"), "--out",
                     str(tmp_path / name), "--backend", "torch")
        assert result.returncode == 0, result.stderr
        reports[name] = (json.loads((tmp_path / name / "report.json").read_text()),
                         result.stdout)
    (right, said), (late, warned) = reports["right"], reports["late"]
    assert right["overlaps"] == late["overlaps"] == 119
    assert right["agreement"] > AGREES and "disagree" not in said
    assert late["agreement"] < AGREES and late["explained"] > EXPLAINS
    assert "warning: neighbouring images disagree where they overlap" in warned


def with_float_frames(scan, path, convert) -> np.ndarray:
    """A copy of `scan` whose frames are `convert`ed to floating point; the counts."""
    path.write_bytes(scan.read_bytes())
    with h5py.File(path, "a") as f:
        counts = f["entry_1/data_1/data"][()]
        del f["entry_1/data_1/data"]
        f["entry_1/data_1/data"] = convert(counts)
    return counts


@pytest.mark.integration
def test_a_scan_of_float_frames_is_read_as_counts(scan, tmp_path):
    """Processed files hold counts as floats: a dark subtracted (values below 0), gaps as
    NaN. They reconstruct as the counts do, and the NaN pixels are the scan's mask."""
    gaps = np.zeros((128, 128), bool)
    gaps[70:74, :] = True

    def processed(counts):
        noise = np.random.default_rng(0).normal(0.0, 0.2, counts.shape)
        frames = (counts + noise).astype(np.float32)
        frames[:, gaps] = np.nan
        return frames
    counts = with_float_frames(scan, tmp_path / "float.cxi", processed)
    np.testing.assert_array_equal(read_cxi(tmp_path / "float.cxi").mask, gaps)
    result = run("reconstruct", str(tmp_path / "float.cxi"), "--out", str(tmp_path / "out"),
                 "--backend", "torch")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reconstructed"] == len(counts)
    assert report["residual_median"] < load_manifest("ptychonn-default").alarm_limits()[0] / 2
    assert report["explained"] > EXPLAINS

    with_float_frames(scan, tmp_path / "scaled.cxi", lambda c: (c / 1e4).astype(np.float32))
    result = run("reconstruct", str(tmp_path / "scaled.cxi"), "--out", str(tmp_path / "out2"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mostly fractions of a count" in result.stderr


@pytest.mark.parametrize("damage, reason", [
    (lambda f: f.__delitem__("entry_1/sample_1/geometry_1/translation"), "no positions"),
    (lambda f: f.__setitem__("extra", 0) or _truncate_positions(f), "positions of shape"),
])
@pytest.mark.integration
def test_a_bad_scan_is_refused_with_the_reason(scan, tmp_path, damage, reason):
    bad = tmp_path / "bad.cxi"
    bad.write_bytes(scan.read_bytes())
    with h5py.File(bad, "a") as f:
        damage(f)
    result = run("reconstruct", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and reason in result.stderr


def _truncate_positions(f: h5py.File) -> None:
    path = "entry_1/sample_1/geometry_1/translation"
    kept = f[path][:-3]
    del f[path]
    f[path] = kept
