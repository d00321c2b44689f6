"""`ptychoedge adapt`: learn a scan, check on held-back frames, keep or set it aside."""

import dataclasses
import json
import subprocess

import pytest
import torch
from conftest import ptychoedge

from ptychoedge.inference.adaptation import REJECTED
from ptychoedge.inference.instrument import Instrument, Orientation, write_cxi
from ptychoedge.inference.manifest import Manifest, load_manifest, save_model
from ptychoedge.inference.model import PtychoNN, initialise
from ptychoedge.inference.model_shape import ModelShape
from ptychoedge.inference.preprocess import Preprocessing

pytestmark = pytest.mark.integration


@pytest.fixture
def scan_and_running(tmp_path):
    """A scan through a zone plate over a labyrinth, and a running model made for
    the simulator's own probe (it answers the empty beam for every frame)."""
    from ptychoedge.sim import physics, probes
    from ptychoedge.sim.samples import named_sample

    model_instrument = physics.default_instrument(32, photons=1e6)
    pixel = model_instrument.object_pixel_size
    instrument = Instrument(model_instrument.geometry,
                            probes.named_probe("zoneplate", 32, pixel), 1e6)
    step = physics.step_for_overlap(probes.encircled_diameter(instrument.probe, pixel), 0.6)
    simulator = physics.simulator_for(instrument, seed=0,
                                      sample=named_sample("labyrinth", (256, 256), 0))
    positions = physics.fermat_spiral_positions(80, step)
    frames, _ = simulator.frames(positions)
    scan = tmp_path / "scan.cxi"
    write_cxi(scan, instrument, frames, positions)
    models = tmp_path / "models"
    running_model(models, model_instrument)
    return scan, models


def running_model(models, instrument, orientation=None):
    """A model for `instrument` that has learnt nothing: the empty beam for every frame."""
    torch.manual_seed(0)
    running = PtychoNN(ModelShape(32, 8, "batch", "free"))
    initialise(running)
    if orientation is not None:
        instrument = dataclasses.replace(instrument, orientation=orientation)
    save_model(running.eval(), Manifest.for_instrument(
        "running", running.shape, Preprocessing(32, 32), instrument), models)


def adapt(scan, models, *options):
    return subprocess.run(ptychoedge("adapt", "--scan", str(scan), "--from", "running",
                                     "--model-dir", str(models), *options),
                          capture_output=True, text=True, timeout=600)


def test_a_model_that_explains_the_held_back_frames_better_is_kept(scan_and_running):
    scan, models = scan_and_running
    done = adapt(scan, models, "--epochs", "20")
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    assert said["accepted"] and said["model"] == "running-adapted-1"
    assert said["held_back"] == 8  # every tenth of 80 frames
    assert said["new_residual"] < 0.8 * said["running_residual"]
    manifest = load_manifest("running-adapted-1", models)
    assert manifest.training["parent"]["name"] == "running"
    assert manifest.training["check"]["accepted"] is True
    assert manifest.training["data"]["scan"] == str(scan)
    # the next adaptation of the same model gets a name of its own
    again = adapt(scan, models, "--epochs", "1", "--margin", "0.99")
    assert json.loads(again.stdout.splitlines()[-1])["model"] == "running-adapted-2"


def test_a_model_that_is_not_clearly_better_is_set_aside_with_the_reason(scan_and_running):
    scan, models = scan_and_running
    done = adapt(scan, models, "--epochs", "1", "--margin", "0.99", "--name", "hopeful")
    assert done.returncode == 1, done.stderr
    assert "set aside" in done.stdout and "held-back frames" in done.stdout
    assert not (models / "hopeful.json").exists()
    aside = load_manifest("hopeful", models / REJECTED)
    assert aside.training["check"]["accepted"] is False


@pytest.mark.parametrize("options, reason", [
    (("--name", "running"), "already in"),
    (("--margin", "1.5"), "--margin"),
    (("--epochs", "0"), "--epochs"),
])
def test_bad_requests_are_refused_in_one_line(scan_and_running, options, reason):
    scan, models = scan_and_running
    done = adapt(scan, models, *options)
    assert done.returncode == 2
    assert reason in done.stderr and "Traceback" not in done.stderr
    assert load_manifest("running", models).training == {}  # the running model untouched


def test_the_new_model_sees_the_detector_as_the_running_one_does(scan_and_running):
    # a scan file says nothing of the detector's orientation: it is the running model's
    scan, models = scan_and_running
    flipped = Orientation(flip_x=True)
    running_model(models, load_manifest("running", models).instrument, flipped)
    assert adapt(scan, models, "--epochs", "1").returncode in (0, 1)
    adapted = next(models.rglob("running-adapted-1.json"))
    assert load_manifest("running-adapted-1", adapted.parent).preprocessing.orientation == flipped
