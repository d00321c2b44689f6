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


@pytest.mark.slow
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


@pytest.mark.slow
def test_more_samples_are_more_seeds_never_the_live_or_scoring_ones(tmp_path):
    _, manifest = training.train(options("--name", "tiny", "--out-dir", str(tmp_path),
                                         "--width", "4", "--samples", "64", "--validation",
                                         "16", "--epochs", "1", "--sample-seeds", "7",
                                         "--sample-kinds", "default"))
    seeds = manifest.training["data"]["sample_seeds"]
    assert seeds == list(range(101, 108))
    assert training.VALIDATION_SEED not in seeds


@pytest.mark.slow
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


@pytest.mark.integration
@pytest.mark.parametrize("args", [["--width", "-1"], ["--epochs", "zero"], ["--lr", "0"],
                                  ["--input-size", "60"], ["--input-size", "40", "--fold", "2"],
                                  ["--sample-seeds", "100"]])
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


def _tiny_scan(tmp_path):
    """80 frames of a 32-pixel instrument over a labyrinth (60% overlap), with the truth."""
    from ptychoedge.inference.instrument import write_cxi
    from ptychoedge.sim import physics, probes
    from ptychoedge.sim.samples import named_sample

    instrument = physics.default_instrument(32, photons=1e6)
    pixel = instrument.object_pixel_size
    step = physics.step_for_overlap(probes.encircled_diameter(instrument.probe, pixel), 0.6)
    positions = physics.fermat_spiral_positions(80, step)
    simulator = physics.simulator_for(instrument, seed=0,
                                      sample=named_sample("labyrinth", (256, 256), 0))
    frames, _ = simulator.frames(positions)
    scan = tmp_path / "tiny.cxi"
    write_cxi(scan, instrument, frames, positions, sample=simulator.sample,
              sample_pixel_size=pixel)
    return scan


def _physics_scores(model, manifest, scan) -> tuple[float, float, float]:
    """Diffraction loss of the model's patches on every frame of `scan`, and the Pearson
    correlation of its stitched amplitude and phase with the truth stitched the same way
    (over the well-lit region, the constant phase offset removed)."""
    from ptychoedge.inference.mosaic import Mosaic
    from ptychoedge.inference.physics_loss import diffraction_loss

    part = training_data.recorded_scan(scan, manifest.preprocessing, manifest.object_pixel_size,
                                       scan)
    predicted = training.predict(model, part.inputs)
    with torch.no_grad():
        loss = diffraction_loss(torch.from_numpy(predicted), torch.from_numpy(part.counts),
                                torch.from_numpy(manifest.probe), manifest.instrument.photons)

    def stitched(patches, align_phase):
        mosaic = Mosaic(1.0, manifest.illumination(), align_phase)
        for (amplitude, phase), (x, y) in zip(patches, part.pixels, strict=True):
            mosaic.add(amplitude, phase, x, y)
        return mosaic

    got = stitched(predicted, manifest.phase_up_to_a_constant)
    want = stitched(part.targets, False)
    lit = want.coverage()
    (ga, gp), (wa, wp) = got.images(), want.images()
    got_z, want_z = (ga * np.exp(1j * gp))[lit], (wa * np.exp(1j * wp))[lit]
    got_z = got_z * np.exp(-1j * np.angle(np.vdot(want_z, got_z)))
    scores = [float(np.corrcoef(g, w)[0, 1]) if np.ptp(g) > 0 else 0.0
              for g, w in ((np.abs(got_z), np.abs(want_z)), (np.angle(got_z), np.angle(want_z)))]
    return float(loss), *scores


def test_the_overlap_of_true_patches_agrees_only_at_the_right_shift(tmp_path):
    from ptychoedge.inference.physics_loss import neighbour_pairs, overlap_loss

    scan = _tiny_scan(tmp_path)
    model, manifest = training.train(options("--scan", str(scan), "--input-size", "32",
                                             "--width", "4", "--epochs", "1"))
    part = training_data.recorded_scan(scan, manifest.preprocessing,
                                       manifest.object_pixel_size, scan)
    truth = torch.from_numpy(part.targets[:, 0] * np.exp(1j * part.targets[:, 1]))
    pairs = neighbour_pairs(part.pixels, 32)
    shifts = np.rint(part.pixels[pairs[:, 1]] - part.pixels[pairs[:, 0]]).astype(int)
    weight = torch.from_numpy(manifest.illumination())

    def loss(s):
        return overlap_loss(truth[pairs[:, 0]], truth[pairs[:, 1]], s, weight).item()

    right = loss(shifts)
    for wrong in (-shifts, shifts + [1, 0], shifts + [0, -1], shifts[:, ::-1]):
        assert loss(wrong) > 2 * right
    # a patch's constant phase is not the frame's to tell: the loss does not ask for it
    turned = truth * torch.from_numpy(np.exp(1j * np.random.default_rng(0).uniform(
        -np.pi, np.pi, (len(truth), 1, 1))))
    assert overlap_loss(turned[pairs[:, 0]], turned[pairs[:, 1]], shifts, weight).item() \
        == pytest.approx(right, rel=1e-3, abs=1e-6)


@pytest.mark.slow
def test_self_supervised_training_learns_the_object_from_the_frames_alone(tmp_path):
    # From the frames, positions and probe only: the physics loss falls below an untrained
    # network's and a flat patch's, and the stitched phase comes to resemble the truth.
    scan = _tiny_scan(tmp_path)
    recipe = ("--scan", str(scan), "--name", "ss", "--out-dir", str(tmp_path), "--input-size",
              "32", "--width", "8", "--batch-size", "16", "--lr", "2e-3", "--seed", "0")
    start = training.starting_point(options(*recipe))
    untrained = _physics_scores(start.model.eval(), training.Manifest.for_instrument(
        "ss", start.model.shape, start.preprocessing, start.instrument), scan)
    model, manifest = training.train(options(*recipe, "--epochs", "30"))
    trained = _physics_scores(model, manifest, scan)
    flat_model = training.starting_point(options(*recipe)).model.eval()
    with torch.no_grad():  # amplitude 1, phase 0 everywhere: the empty beam
        for head in (flat_model.amplitude, flat_model.phase):
            for parameter in head.parameters():
                parameter.zero_()
    flat = _physics_scores(flat_model, manifest, scan)
    assert manifest.shape.output == "free" and manifest.phase_up_to_a_constant
    assert trained[0] < 0.8 * untrained[0] and trained[0] < 0.8 * flat[0]
    assert trained[2] > 0.3 and trained[2] > untrained[2] + 0.2
    save_model(model, manifest, tmp_path)
    loaded, loaded_manifest = load_model("ss", tmp_path)
    assert loaded_manifest.shape == manifest.shape
