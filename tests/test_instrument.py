"""The instrument as data: CXI files round-trip, bad ones are refused with the reason, the
network's probe follows the forward model exactly, and bundles carry their probe."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptychoedge.inference import forward
from ptychoedge.inference.instrument import (
    ENERGY_PATH,
    PROBE_PATH,
    Instrument,
    InstrumentError,
    Orientation,
    read_cxi,
    write_cxi,
)
from ptychoedge.inference.manifest import Manifest, ModelError, load_model, save_model
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import FrameError, Preprocessing
from ptychoedge.inference.quality import DiffractionResidual
from ptychoedge.sim import physics


def two_mode_instrument(photons: float = 2e5) -> Instrument:
    first = physics.make_probe(64, 28, 3.0)
    second = np.roll(physics.make_probe(64, 24, 1.0), 3, axis=1) * 0.5
    return Instrument(physics.geometry(64), np.stack([first, second]), photons)


def a_scan(instrument: Instrument, points: int = 12):
    simulator = physics.simulator_for(instrument, seed=4, sample_shape=(256, 256),
                                      dtype=np.uint32)
    positions = physics.fermat_spiral_positions(points, 0.1e-6)
    frames, truth = simulator.frames(positions)
    return frames, positions, truth


def test_a_cxi_scan_round_trips_its_instrument(tmp_path):
    instrument = two_mode_instrument()
    frames, positions, _ = a_scan(instrument)
    write_cxi(tmp_path / "scan.cxi", instrument, frames, positions)
    read = read_cxi(tmp_path / "scan.cxi", photons=instrument.photons)
    assert read.geometry.energy_ev == pytest.approx(instrument.geometry.energy_ev)
    assert read.geometry.distance_m == pytest.approx(instrument.geometry.distance_m)
    assert read.geometry.frame_shape == (64, 64)
    assert read.object_pixel_size == pytest.approx(physics.OBJECT_PIXEL_SIZE)
    assert read.modes == 2
    np.testing.assert_allclose(read.probe, instrument.probe, atol=1e-6)
    # The flux, when not given: the probe's own scale, which write_cxi sets to the counts
    assert read_cxi(tmp_path / "scan.cxi").photons == pytest.approx(instrument.photons,
                                                                     rel=1e-5)
    # a probe in other units: the brightest frames' total, a little below the truth
    # behind a sample that absorbs
    with h5py.File(tmp_path / "scan.cxi", "a") as f:
        f[PROBE_PATH][...] = f[PROBE_PATH][()] / 1e3
    estimated = read_cxi(tmp_path / "scan.cxi").photons
    assert 0.5 * instrument.photons < estimated <= 1.05 * instrument.photons


def broken(tmp_path, change) -> str:
    instrument = two_mode_instrument()
    frames, positions, _ = a_scan(instrument, 4)
    path = tmp_path / "bad.cxi"
    write_cxi(path, instrument, frames, positions)
    with h5py.File(path, "a") as f:
        change(f)
    with pytest.raises(InstrumentError) as error:
        read_cxi(path)
    return str(error.value)


def replace(path: str, value):
    def change(f):
        del f[path]
        f[path] = value
    return change


@pytest.mark.parametrize("change, reason", [
    (lambda f: f.__delitem__(PROBE_PATH), "no entry_1/instrument_1/source_1/illumination"),
    (replace(PROBE_PATH, np.ones((2, 32, 32), np.complex64) * np.nan), "non-finite"),
    (replace(PROBE_PATH, np.ones((96, 96), np.complex64)), "larger than the 64x64 frames"),
    (replace(PROBE_PATH, np.ones((64, 64), np.float32)), "must be complex"),
    (replace(ENERGY_PATH, 10e3), "CXI stores the energy in J"),  # eV written as J
    (lambda f: f.__delitem__("entry_1/instrument_1/detector_1/distance"), "distance"),
    (replace("entry_1/instrument_1/detector_1/y_pixel_size", 150e-6), "square pixels"),
])
def test_a_bad_instrument_file_is_refused_with_the_reason(tmp_path, change, reason):
    assert reason in broken(tmp_path, change)


@pytest.mark.parametrize("crop, binning", [(64, 1), (32, 1), (64, 2)])
def test_the_network_probe_predicts_what_the_detector_crop_records(crop, binning):
    # Through empty space, the network's probe must reproduce the recorded crop: exactly
    # for a crop (Fourier-cropped probe), closely for binning while the probe fits the
    # smaller field (here a 10 pixel spot in a 32 pixel field).
    instrument = two_mode_instrument(photons=1.0)
    if binning > 1:
        instrument = Instrument(instrument.geometry, physics.make_probe(64, 10, 1.0), 1.0)
    full = forward.far_field(instrument.probe, np.ones((64, 64), np.complex64))
    top = 32 - crop // 2
    size = crop // binning
    measured = full[top:top + crop, top:top + crop].reshape(size, binning, size,
                                                           binning).sum(axis=(1, 3))
    probe = instrument.model_probe(crop, binning)
    predicted = forward.far_field(probe, np.ones(probe.shape[1:], np.complex64))
    tolerance = 1e-5 if binning == 1 else 0.1  # a binned pixel sums, it does not sample
    assert np.abs(predicted - measured).sum() < tolerance * measured.sum()


def test_the_residual_is_near_zero_for_the_truth_with_every_probe_mode():
    instrument = two_mode_instrument(photons=1e9)  # little noise
    frames, _, truth = a_scan(instrument, 8)
    manifest = Manifest.for_instrument("t", ModelShape(32, 4), Preprocessing(32, 32),
                                       instrument)
    residual = DiffractionResidual(manifest)
    counts = manifest.preprocessing.binned(frames)
    targets = manifest.preprocessing.targets(truth)
    true = residual(counts, targets[:, 0], targets[:, 1])
    flat = residual(counts, np.ones_like(targets[:, 0]), np.zeros_like(targets[:, 1]))
    assert np.median(true) < 0.2 * np.median(flat)
    one_mode = Manifest.for_instrument("t", ModelShape(32, 4), Preprocessing(32, 32),
                                       Instrument(instrument.geometry, instrument.probe[:1],
                                                  instrument.photons))
    assert np.median(DiffractionResidual(one_mode)(counts, targets[:, 0],
                                                   targets[:, 1])) > 2 * np.median(true)


def test_frames_of_another_geometry_are_refused_with_a_reason():
    preprocessing = Preprocessing(32, 32)
    centred = np.zeros((64, 64), np.uint16)
    centred[28:36, 28:36] = 1000
    assert preprocessing.binned(centred).shape == (1, 32, 32)
    corner = np.zeros((96, 96), np.uint16)
    corner[12:20, 12:20] = 1000  # the direct beam near a corner: another geometry
    with pytest.raises(FrameError, match="direct beam") as error:
        preprocessing.binned(corner)
    assert error.value.kind == "beam"
    # With the beam where the instrument says it is, the same frame is taken.
    Preprocessing(32, 32, orientation=Orientation(beam_x=16, beam_y=16)).binned(corner)
    off_centre = np.zeros((64, 64), np.uint16)
    off_centre[18:26, 18:26] = 1000  # in the crop, but far from its centre
    with pytest.raises(FrameError, match="centred"):
        preprocessing.binned(off_centre)


def test_orientation_maps_frames_onto_the_forward_model():
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    oriented = Orientation(transpose=True, flip_x=True).apply(frame[None])[0]
    np.testing.assert_array_equal(oriented, frame.T[:, ::-1])


def test_a_bundle_carries_its_probe_and_refuses_a_changed_one(tmp_path):
    instrument = two_mode_instrument()
    manifest = Manifest.for_instrument("m", ModelShape(32, 4), Preprocessing(64, 32),
                                       instrument)
    save_model(PtychoNN(manifest.shape), manifest, tmp_path)
    _, loaded = load_model("m", tmp_path)
    np.testing.assert_allclose(loaded.instrument.probe, instrument.probe)
    assert loaded.instrument.geometry == instrument.geometry
    assert loaded.object_pixel_size == pytest.approx(physics.OBJECT_PIXEL_SIZE)
    probe_file = tmp_path / "m.probe.npy"
    np.save(probe_file, instrument.probe * 1.01)
    with pytest.raises(ModelError, match="sha256"):
        load_model("m", tmp_path)


def test_an_unwritable_model_directory_is_refused_and_left_clean(tmp_path):
    manifest = Manifest.for_instrument("m", ModelShape(32, 4), Preprocessing(64, 32),
                                       two_mode_instrument())
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(ModelError, match="cannot write"):
        save_model(PtychoNN(manifest.shape), manifest, blocked / "models")
    assert list(tmp_path.iterdir()) == [blocked]
