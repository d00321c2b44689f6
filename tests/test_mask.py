"""A detector's mask: pixels that measure nothing (module gaps, dead pixels), which real
detectors mark with the pixel type's maximum. The instrument carries the mask (CXI, the
model bundle); the network sees the gaps filled, and the residual, the physics loss and
the refinement leave them out."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import h5py
import numpy as np
import pytest
import torch
from conftest import ptychoedge

from ptychoedge.inference import training_data
from ptychoedge.inference.adaptation import check
from ptychoedge.inference.instrument import (
    MASK_PATH,
    InstrumentError,
    Orientation,
    read_cxi,
    read_mask,
    write_cxi,
)
from ptychoedge.inference.manifest import (
    Manifest,
    ModelError,
    load_manifest,
    load_model,
    model_paths,
    save_model,
)
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.physics_loss import diffraction_loss
from ptychoedge.inference.preprocess import FrameError, Preprocessing
from ptychoedge.inference.quality import DiffractionResidual
from ptychoedge.inference.refine import refine
from ptychoedge.sim import physics


def gaps(shape=(128, 128)) -> np.ndarray:
    """A module gap across the frame off the beam, one through it, and dead pixels."""
    n = shape[0]
    mask = np.zeros(shape, bool)
    mask[n * 35 // 64:n * 37 // 64, :] = True
    mask[:, n // 2 - 2:n // 2] = True
    mask[n // 12, n // 6] = mask[n * 25 // 32, n * 45 // 64] = True
    return mask


def marked(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    frames = frames.copy()
    frames[..., mask] = np.iinfo(frames.dtype).max
    return frames


@pytest.fixture(scope="module")
def scan():
    simulator = physics.PtychographySimulator(128, seed=5, sample_shape=(384, 384))
    positions = physics.fermat_spiral_positions(40, 0.25e-6)
    frames, truth = simulator.frames(positions)
    return simulator, positions, frames, truth


def nexus_mask(path, mask):
    """A NeXus NXmx master file as an Eiger writes it: the mask as bit flags (1: gap, 2: dead),
    one per energy threshold, the second also marking one noisy pixel (16)."""
    flags = np.where(mask, 1, 0).astype(np.uint32)
    flags[0, 0] = 2
    noisy = flags.copy()
    noisy[-1, -1] = 16
    with h5py.File(path, "w") as f:
        detector = f.create_group("entry/instrument/detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["detectorSpecific/threshold_1/pixel_mask"] = flags
        detector["detectorSpecific/threshold_2/pixel_mask"] = noisy
    expected = mask.copy()
    expected[0, 0] = expected[-1, -1] = True
    return expected


def with_mask(instrument, mask):
    return dataclasses.replace(instrument, mask=mask)


def test_the_mask_round_trips_through_cxi_and_the_bundle(scan, tmp_path):
    simulator, positions, frames, _ = scan
    instrument = with_mask(simulator.instrument(), gaps())
    write_cxi(tmp_path / "scan.cxi", instrument, marked(frames, gaps()), positions)
    read = read_cxi(tmp_path / "scan.cxi")
    np.testing.assert_array_equal(read.mask, gaps())
    # the gaps' maximum values are not counts: the flux is read as without them
    assert read.photons == pytest.approx(simulator.photons, rel=0.05)
    shape = ModelShape(64, 4)
    save_model(PtychoNN(shape), Manifest.for_instrument("masked", shape, Preprocessing(128, 64),
                                                        read), tmp_path)
    loaded = load_manifest("masked", tmp_path)
    np.testing.assert_array_equal(loaded.instrument.mask, gaps())
    np.testing.assert_array_equal(loaded.preprocessing.mask, gaps())
    # a bundle whose mask was changed is refused
    np.save(model_paths("masked", tmp_path)["mask"], np.zeros((128, 128), bool))
    with pytest.raises(ModelError, match="masked.mask.npy does not match"):
        load_model("masked", tmp_path)


def test_a_mask_is_read_from_numpy_cxi_and_nexus_files(scan, tmp_path):
    simulator, positions, frames, _ = scan
    np.save(tmp_path / "mask.npy", gaps())
    write_cxi(tmp_path / "scan.cxi", with_mask(simulator.instrument(), gaps()), frames,
              positions)
    for name in ("mask.npy", "scan.cxi"):
        np.testing.assert_array_equal(read_mask(tmp_path / name) != 0, gaps())
    expected = nexus_mask(tmp_path / "master.h5", gaps())
    np.testing.assert_array_equal(read_mask(tmp_path / "master.h5"), expected)
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["entry/data/data"] = frames[:2]
    with pytest.raises(InstrumentError, match="no detector mask: looked for .*pixel_mask"):
        read_mask(tmp_path / "empty.h5")
    (tmp_path / "mask.txt").write_text("0 1\n1 0\n")
    with pytest.raises(InstrumentError, match="neither a .npy mask nor a readable HDF5"):
        read_mask(tmp_path / "mask.txt")


@pytest.mark.parametrize("mask, reason", [
    (np.zeros((64, 64), bool), r"a mask of shape \(64, 64\) for frames of \(128, 128\)"),
    (np.zeros((128, 128), np.float32), "integers or booleans"),
    (np.ones((128, 128), np.uint8), "leaves no pixel"),
])
def test_a_bad_mask_is_refused_with_the_reason(scan, mask, reason):
    with pytest.raises(InstrumentError, match=reason):
        with_mask(scan[0].instrument(), mask)


def test_frames_of_another_size_than_the_mask_are_refused(scan):
    preprocessing = Preprocessing(128, 64, mask=gaps())
    with pytest.raises(FrameError, match="mask is for 128x128"):
        preprocessing.binned(np.zeros((1, 256, 256), np.uint16))


def test_the_network_sees_the_gaps_filled(scan):
    _, _, frames, _ = scan
    plain = Preprocessing(128, 64)
    masked = Preprocessing(128, 64, mask=gaps())
    clean = plain.frames(frames)
    unmasked = plain.frames(marked(frames, gaps()))
    filled = masked.frames(marked(frames, gaps()))
    assert np.abs(filled - clean).mean() < 0.1 * np.abs(unmasked - clean).mean()
    # binned pixels through which the gap runs kept some pixels, or a partner across the beam
    assert masked.measured().mean() > 0.9


def test_simulated_frames_reach_the_network_with_the_detectors_gaps_filled(scan):
    # training simulates frames in the forward model's orientation, beam centred; the
    # network must see them as it will see the detector's, gaps filled where the detector
    # has them: here a transposed, flipped detector larger than the window, beam off centre
    simulator, _, frames, _ = scan
    orientation = Orientation(transpose=True, flip_x=True, beam_x=70, beam_y=80)
    oriented = np.zeros((len(frames), 150, 140), frames.dtype)
    oriented[:, 16:144, 6:134] = frames
    arriving = np.swapaxes(oriented[..., ::-1], -1, -2)
    np.testing.assert_array_equal(orientation.apply(arriving), oriented)
    mask = gaps(arriving.shape[1:])
    preprocessing = Preprocessing(128, 64, orientation=orientation, mask=mask)
    np.testing.assert_allclose(preprocessing.canonical(128).frames(frames),
                               preprocessing.frames(marked(arriving, mask)), atol=1e-6)

    instrument = simulator.instrument()
    plain = training_data.simulated(instrument, Preprocessing(128, 64), ("default",), (5,), 16,
                                    np.random.default_rng(3))
    square = Preprocessing(128, 64, mask=gaps())
    gapped = training_data.simulated(with_mask(instrument, gaps()), square, ("default",), (5,),
                                     16, np.random.default_rng(3))
    changed = np.abs(gapped.inputs - plain.inputs)[:, 0] > 1e-6
    assert changed.any(axis=0)[~square.measured()].mean() > 0.9
    assert not changed.any(axis=0)[square.measured()].any()


def test_the_residual_and_the_physics_loss_leave_masked_pixels_out(scan):
    simulator, _, frames, truth = scan
    plain = Manifest.for_instrument("t", ModelShape(128), Preprocessing(128, 128),
                                    simulator.instrument())
    masked = Manifest.for_instrument("t", ModelShape(128), Preprocessing(128, 128),
                                     with_mask(simulator.instrument(), gaps()))
    # fully masked binned pixels (no binning here), away from the beam: nothing to fill
    assert not masked.preprocessing.measured()[128 // 12, 128 // 6]
    targets = plain.preprocessing.targets(truth)
    bad = marked(frames, gaps())

    def residual(manifest, which):
        binned = manifest.preprocessing.binned(which)
        return np.median(DiffractionResidual(manifest)(binned, targets[:, 0], targets[:, 1]))

    clean = residual(plain, frames)
    assert residual(masked, bad) < 1.5 * clean
    assert residual(plain, bad) > 10 * clean

    def loss(manifest, which, measured):
        counts = torch.from_numpy(manifest.preprocessing.binned(which, check_beam=False))
        return float(diffraction_loss(torch.from_numpy(targets), counts,
                                      torch.from_numpy(manifest.probe), simulator.photons,
                                      measured))

    kept = torch.from_numpy(masked.preprocessing.measured().astype(np.float32))
    assert loss(masked, bad, kept) < 1.5 * loss(plain, frames, None)
    assert loss(plain, bad, None) > 10 * loss(plain, frames, None)


def test_the_refinement_ignores_masked_pixels(scan):
    simulator, positions, frames, _ = scan
    bad = marked(frames, gaps())
    orientation = simulator.instrument().orientation
    clean = refine(frames, positions, simulator.instrument(), orientation, 60.0, most_sweeps=8)
    masked = refine(bad, positions, with_mask(simulator.instrument(), gaps()), orientation,
                    60.0, most_sweeps=8)
    blind = refine(bad, positions, simulator.instrument(), orientation, 60.0, most_sweeps=8)
    assert masked.errors[-1] < 1.5 * clean.errors[-1]
    assert blind.errors[-1] > 10 * clean.errors[-1]


@pytest.mark.integration
def test_a_model_trained_for_a_masked_detector_reconstructs_its_scan(tmp_path):
    """`ptychoedge train --scan --mask` given an Eiger's NeXus master file, then
    `ptychoedge reconstruct` with that model: the bundle keeps the mask, and the scan's
    frames, gaps and all, fit the model's images."""
    instrument = physics.default_instrument(64, photons=1e6)
    simulator = physics.simulator_for(instrument, seed=5)
    positions = physics.fermat_spiral_positions(120, 0.15e-6)
    frames, _ = simulator.frames(positions)
    mask = gaps((64, 64))
    write_cxi(tmp_path / "scan.cxi", instrument, marked(frames, mask), positions)
    expected = nexus_mask(tmp_path / "master.h5", mask)
    models = tmp_path / "models"
    trained = subprocess.run(ptychoedge(
        "train", "--scan", str(tmp_path / "scan.cxi"), "--mask", str(tmp_path / "master.h5"),
        "--input-size", "32", "--width", "4", "--batch-size", "16", "--lr", "3e-3",
        "--epochs", "3", "--threads", "1", "--name", "gapped", "--out-dir", str(models)),
        capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    np.testing.assert_array_equal(load_manifest("gapped", models).instrument.mask, expected)
    done = subprocess.run(ptychoedge(
        "reconstruct", str(tmp_path / "scan.cxi"), "--model", "gapped", "--model-dir",
        str(models), "--out", str(tmp_path / "out")), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == 120
    assert report["residual_median"] < load_manifest("gapped", models).alarm_limits()[0]


def test_adaptation_judges_a_running_model_without_the_mask_as_it_reads_the_detector(
        scan, tmp_path):
    """Adaptation's check on a scan with gaps: the running model, which has no mask, is
    judged on the frames as it reads them (gaps taken for counts), not on the new model's
    filled ones, where the same weights with the detector's mask would fit as well."""
    simulator, positions, frames, _ = scan
    write_cxi(tmp_path / "scan.cxi", with_mask(simulator.instrument(), gaps()),
              marked(frames, gaps()), positions)
    running = load_model("ptychonn-default")
    masked = dataclasses.replace(running[1], name="masked", instrument=with_mask(
        running[1].instrument, gaps()))
    verdict = check(running, (running[0], masked), tmp_path / "scan.cxi", margin=0.2)
    assert verdict.running_residual > 10 * verdict.new_residual


def test_a_gap_is_guessed_from_around_it_and_across_the_beam():
    from ptychoedge.inference.gap_fill import GapFill

    kept = ~gaps((64, 64))
    kept[0, :] = False  # a row whose partner across the beam is itself, and no line across
    fill = GapFill.for_pixels(kept)
    flat = np.full((1, 64, 64), 7.0, np.float32)
    flat[0, ~kept] = 65535.0
    filled = fill(flat.copy())[0]
    np.testing.assert_allclose(filled[1:], 7.0, rtol=1e-6)  # weights sum to 1
    assert not fill.guessed[fill.targets < 64].any() and np.all(filled[0] == 0.0)


@pytest.mark.integration
def test_a_scan_with_gaps_and_its_mask_reconstructs_with_a_model_that_has_none(tmp_path):
    """`ptychoedge make-scan --mask` writes the gaps and the mask; `ptychoedge reconstruct`
    takes the scan's mask where the model has none, and without one in the file, the
    pixels its frames never count."""
    np.save(tmp_path / "mask.npy", gaps())
    made = subprocess.run(ptychoedge("make-scan", "--points", "60", "--mask",
                                     str(tmp_path / "mask.npy"), "--out",
                                     str(tmp_path / "scan.cxi")),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    with h5py.File(tmp_path / "scan.cxi", "r") as f:
        frames = f["entry_1/data_1/data"][()]
    assert np.all(frames[:, gaps()] == np.iinfo(frames.dtype).max)

    def residual(scan: str) -> float:
        done = subprocess.run(ptychoedge("reconstruct", str(tmp_path / scan), "--out",
                                         str(tmp_path / scan.replace(".", "-"))),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = tmp_path / scan.replace(".", "-") / "report.json"
        return json.loads(report.read_text())["residual_median"]

    minor = load_manifest("ptychonn-default").alarm_limits()[0]
    assert residual("scan.cxi") < minor / 2
    with h5py.File(tmp_path / "scan.cxi", "a") as f:
        del f[MASK_PATH]
    assert residual("scan.cxi") < minor / 2


def test_the_instances_count_pixels_at_the_maximum_outside_the_models_mask(scan):
    """What the fit guard names as the likely cause of a misfit: a detector's gaps the
    model does not know."""
    from ptychoedge.inference.backends import open_model
    from ptychoedge.inference.batcher import Reconstructor

    frames = marked(scan[2][:4], gaps())
    backend, shipped = open_model("onnxruntime", "fp32", "ptychonn-default", threads=1)
    assert list(Reconstructor(backend, shipped)(list(frames)).not_counts) == [gaps().sum()] * 4
    knows = dataclasses.replace(shipped, instrument=with_mask(shipped.instrument, gaps()))
    frames[1, 5, 5] = np.iinfo(frames.dtype).max  # a pixel saturated, or a new dead one
    assert list(Reconstructor(backend, knows)(list(frames)).not_counts) == [0, 1, 0, 0]


def test_gaps_written_below_zero_are_no_counts_and_never_a_nan_image(scan):
    """Some detectors write -1 in their gaps (signed pixels): read as 0, counted as no
    counts, and with the mask left out as the maximum's are."""
    from ptychoedge.inference.backends import open_model
    from ptychoedge.inference.batcher import Reconstructor

    frames = scan[2][:4].astype(np.int32)
    frames[:, gaps()] = -1
    backend, shipped = open_model("onnxruntime", "fp32", "ptychonn-default", threads=1)
    blind = Reconstructor(backend, shipped)(list(frames))
    assert np.isfinite(blind.patches).all() and np.isfinite(blind.residuals).all()
    assert list(blind.not_counts) == [gaps().sum()] * 4
    knows = dataclasses.replace(shipped, instrument=with_mask(shipped.instrument, gaps()))
    seen = Reconstructor(backend, knows)(list(frames))
    clean = Reconstructor(backend, shipped)(list(scan[2][:4]))
    assert list(seen.not_counts) == [0] * 4
    assert np.median(seen.residuals) < 1.5 * np.median(clean.residuals)


def test_a_scan_without_a_mask_has_the_pixels_its_frames_never_count(scan, tmp_path):
    """A detector's gaps read no count in every frame: a scan's file without a mask gets
    them as its mask (what `train --scan` and the pipeline's adaptation read)."""
    simulator, positions, frames, _ = scan
    bad = marked(frames, gaps())
    bad[3, 40, 40] = np.iinfo(bad.dtype).max  # saturated in one frame only: a count elsewhere
    write_cxi(tmp_path / "scan.cxi", simulator.instrument(), bad, positions)
    np.testing.assert_array_equal(read_cxi(tmp_path / "scan.cxi").mask, gaps())
    write_cxi(tmp_path / "clean.cxi", simulator.instrument(), frames, positions)
    assert read_cxi(tmp_path / "clean.cxi").mask is None
    signed = frames.astype(np.int32)
    signed[:, gaps()] = -1
    write_cxi(tmp_path / "signed.cxi", simulator.instrument(), signed, positions)
    np.testing.assert_array_equal(read_cxi(tmp_path / "signed.cxi").mask, gaps())
