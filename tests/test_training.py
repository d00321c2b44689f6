"""Training lowers the loss; what it writes loads only as written; bad arguments are refused."""

import argparse
import subprocess

import numpy as np
import pytest
import torch
from conftest import ptychoedge

from ptychoedge.inference import training, training_data
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    ModelError,
    load_manifest,
    load_model,
    save_model,
)
from ptychoedge.inference.metrics import mean_psnr, mean_ssim, psnr, ssim
from ptychoedge.sim.physics import OBJECT_PIXEL_SIZE


def options(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    return parser.parse_args(list(args))


def small_run(tmp_path, epochs: int) -> argparse.Namespace:
    return options("--name", "tiny", "--out-dir", str(tmp_path), "--width", "4", "--samples",
                   "192", "--validation", "16", "--epochs", str(epochs), "--lr", "3e-3")


def test_a_short_run_lowers_the_loss_and_writes_a_loadable_model(tmp_path):
    untrained_model, untrained = training.train(small_run(tmp_path, epochs=1))
    model, manifest = training.train(small_run(tmp_path, epochs=4))
    assert manifest.validation["amplitude_psnr"] > untrained.validation["amplitude_psnr"]
    assert manifest.training["final_loss"] < untrained.training["final_loss"]
    save_model(model, manifest, tmp_path)
    loaded, loaded_manifest = load_model("tiny", tmp_path)
    assert loaded_manifest.sha256 == manifest.sha256
    assert loaded_manifest.preprocessing == manifest.preprocessing
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], weights)


def test_a_tampered_or_misplaced_model_is_refused(tmp_path):
    model, manifest = training.train(small_run(tmp_path, epochs=1))
    save_model(model, manifest, tmp_path)
    weights = tmp_path / "tiny.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="sha256"):
        load_model("tiny", tmp_path)
    for name in ("../tiny", "/etc/passwd", "", "missing"):
        with pytest.raises(ModelError):
            load_model(name, tmp_path)


def test_the_shipped_model_says_how_to_use_it():
    manifest = load_manifest(DEFAULT_MODEL)
    model, _ = load_model(DEFAULT_MODEL)
    assert manifest.preprocessing.input_size == manifest.shape.input_size
    assert manifest.preprocessing.crop_size % manifest.preprocessing.input_size == 0
    assert manifest.object_pixel_size == pytest.approx(OBJECT_PIXEL_SIZE)
    assert manifest.probe.shape[-1] == manifest.shape.input_size
    assert manifest.training["samples"] > 0
    assert 0 not in manifest.training["sample_seeds"]  # the live sample stays unseen
    assert manifest.validation["amplitude_ssim"] > 0.5
    assert manifest.validation["phase_ssim"] > 0.7
    x = torch.zeros(2, 1, manifest.shape.input_size, manifest.shape.input_size)
    assert model(x).shape == (2, 2, manifest.shape.input_size, manifest.shape.input_size)


def test_the_shipped_model_reconstructs_structure_not_just_the_mean():
    # A flat image at the truth's mean scores SSIM 0.54 (amplitude) and 0.84 (phase) on
    # these patches, so SSIM alone cannot tell a trained net from a collapsed one.
    model, manifest = load_model(DEFAULT_MODEL)
    data = training_data.simulated(manifest.instrument, manifest.preprocessing, ("default",),
                                   (training.VALIDATION_SEED,), 48, np.random.default_rng(5))
    predicted = training.predict(model, data.inputs)
    targets = data.targets
    for channel in (0, 1):
        correlation = np.corrcoef(predicted[:, channel].ravel(), targets[:, channel].ravel())
        assert correlation[0, 1] > 0.5


@pytest.mark.parametrize("args", [["--width", "-1"], ["--epochs", "zero"], ["--lr", "0"],
                                  ["--input-size", "60"]])
def test_bad_arguments_are_one_line_errors(args):
    result = subprocess.run(ptychoedge("train", *args), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptychoedge train: error")


def test_metrics_against_known_values():
    rng = np.random.default_rng(1)
    images = rng.random((3, 48, 48))
    assert ssim(images[0], images[0], 1.0) == pytest.approx(1.0)
    assert abs(ssim(images[0], images[1], 1.0)) < 0.1  # independent noise
    assert mean_ssim(images, images, 1.0) == pytest.approx(1.0)
    # A constant error e gives MSE e**2: PSNR = 10 log10(range**2 / e**2)
    assert psnr(images[0], images[0] + 0.05, 2.0) == pytest.approx(10 * np.log10(4 / 0.0025))
    assert mean_psnr(images, images - 0.1, 1.0) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        ssim(images[0], images[0, :10], 1.0)
