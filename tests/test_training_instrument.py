"""Training for an instrument: from an instrument file (simulated), and supervised from a
recorded scan and its reconstruction; bad inputs refused with the reason, nothing
half-written left in the model directory."""

from __future__ import annotations

import argparse
import subprocess

import numpy as np
import pytest
import torch
from conftest import ptychoedge

from ptychoedge.inference import training
from ptychoedge.inference.instrument import Instrument, write_cxi
from ptychoedge.inference.manifest import load_model
from ptychoedge.inference.physics_loss import diffraction_loss
from ptychoedge.inference.scores import correlation
from ptychoedge.inference.training_data import recorded_scan
from ptychoedge.sim import physics

TINY = ("--input-size", "32", "--width", "4", "--batch-size", "16", "--lr", "3e-3",
        "--threads", "1")


@pytest.fixture(autouse=True)
def one_thread():
    """As `ptychoedge train --threads 1` runs: two threads on a busy 2-core machine crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def options(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    return parser.parse_args([*TINY, *args])


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    """400 frames of a 64-pixel instrument over a labyrinth, with the true object."""
    from ptychoedge.sim.samples import named_sample
    instrument = physics.default_instrument(64, photons=1e6)
    simulator = physics.simulator_for(instrument, seed=5,
                                      sample=named_sample("labyrinth", (384, 384), 5))
    positions = physics.fermat_spiral_positions(400, 0.08e-6)
    frames, _ = simulator.frames(positions)
    path = tmp_path_factory.mktemp("scan") / "scan.cxi"
    write_cxi(path, instrument, frames, positions, sample=simulator.sample,
              sample_pixel_size=simulator.pixel_size)
    return path


def held_out_figures(model, manifest, scan_path) -> tuple[float, float]:
    """Physics loss and phase correlation with the truth on the held-out tenth of the scan."""
    part = recorded_scan(scan_path, manifest.preprocessing, manifest.object_pixel_size,
                         scan_path)
    held = part.subset(np.arange(len(part.inputs)) % training.HELD_OUT_EVERY == 0)
    with torch.inference_mode():
        output = model(torch.from_numpy(held.inputs))
        loss = diffraction_loss(output, torch.from_numpy(held.counts),
                                torch.from_numpy(manifest.probe), manifest.instrument.photons)
    return float(loss), correlation(output.numpy()[:, 1], held.targets[:, 1])


@pytest.mark.slow
def test_supervised_from_a_reconstruction_learns_the_scan(small_scan, tmp_path):
    figures = []
    for epochs in ("1", "25"):
        model, manifest = training.train(options(
            "--scan", str(small_scan), "--reconstruction", str(small_scan), "--epochs", epochs,
            "--crop", "32", "--name", f"sup{epochs}", "--out-dir", str(tmp_path)))
        figures.append(held_out_figures(model, manifest, small_scan))
        assert manifest.training["mode"] == "supervised"
        assert manifest.training["data"]["scan_sha256"]
    (loss_before, phase_before), (loss_after, phase_after) = figures
    assert loss_after < loss_before
    assert phase_after > phase_before + 0.05


@pytest.mark.integration
def test_an_instrument_file_trains_a_model_of_that_instrument(tmp_path):
    probe = physics.make_probe(64, 24, 2.0)
    instrument = Instrument(physics.geometry(64), probe, 3e5)
    path = tmp_path / "instrument.cxi"
    write_cxi(path, instrument)
    result = subprocess.run(ptychoedge("train", "--instrument", str(path), *TINY, "--samples",
                                       "64", "--validation", "16", "--epochs", "1",
                                       "--sample-kinds", "labyrinth", "--name", "inst",
                                       "--out-dir", str(tmp_path / "models")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _, manifest = load_model("inst", tmp_path / "models")
    np.testing.assert_allclose(manifest.instrument.probe, instrument.probe, atol=1e-6)
    assert manifest.instrument.photons == pytest.approx(3e5)
    assert manifest.object_pixel_size == pytest.approx(2 * physics.OBJECT_PIXEL_SIZE)
    assert manifest.validation["residual_alarm"][0] < manifest.validation["residual_alarm"][1]


@pytest.mark.parametrize("make, reason", [
    (lambda d: np.savez(d / "r.npz", object=np.ones((400, 400), np.complex64),
                        pixel_size=7e-9), "integer fraction"),
    (lambda d: np.savez(d / "r.npz", object=np.full((400, 400), np.nan, np.complex64),
                        pixel_size=1e-8), "non-finite"),
    (lambda d: np.savez(d / "r.npz", object=np.ones((40, 40), np.complex64),
                        pixel_size=1e-8), "does not cover"),
])
@pytest.mark.integration
def test_a_bad_reconstruction_is_refused_and_nothing_is_written(small_scan, tmp_path, make,
                                                                 reason):
    make(tmp_path)
    models = tmp_path / "models"
    result = subprocess.run(ptychoedge("train", "--scan", str(small_scan), "--reconstruction",
                                       str(tmp_path / "r.npz"), *TINY, "--epochs", "1",
                                       "--out-dir", str(models)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and reason in result.stderr
    assert not models.exists() or not any(models.iterdir())
