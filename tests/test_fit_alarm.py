"""The fit guard on a real pipeline: frames of an instrument unlike the model's raise the
alarm on Residual_RBV and turn the state to Misfit with a plain message; a model made for
that instrument clears it. A network that cannot read the sample gives images that do
not tell the frames apart: Explained_RBV alarms and the state is Misfit, until a model
that learnt such samples runs. Frames of a detector with module gaps alarm until the
model knows the detector's mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import pva_ready, start_ioc, start_sim, wait_until
from test_mask import gaps

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.instrument import Instrument
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    copy_model,
    load_model,
    save_model,
)
from ptychoedge.pvdb.processors import EXPLAINS
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe

STARTUP = 90  # s: instances load torch and onnxruntime, on two shared cores
PROBE = "zoneplate-defocus"


def test_frames_of_another_instrument_raise_the_alarm_and_a_model_for_it_clears_it(
        spawn, pva, prefix, tmp_path):
    models = tmp_path / "models"
    copy_model(DEFAULT_MODEL, MODEL_DIR, models)
    # the same weights, bundled with the zone plate the detector below sees
    model, shipped = load_model(DEFAULT_MODEL)
    zone_plate = Instrument(physics.geometry(128), named_probe(PROBE, 128, 1e-8),
                            shipped.instrument.photons)
    save_model(model, Manifest.for_instrument("zoneplate", shipped.shape,
                                              shipped.preprocessing, zone_plate), models)

    d, p = prefix, prefix.replace(":", "E:")
    start_sim(spawn, d, tmp_path, "--no-stage", "--probe", PROBE, "--sample", "labyrinth")
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state", "--model-dir",
                    str(models))

    def get(name: str):
        return plain(pva.get(p + name, timeout=5))

    def severity(name: str) -> int:
        return pva.get(p + name, timeout=5)["alarm"]["severity"]

    def acquire(frames: int) -> None:
        for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", frames),
                            ("cam1:AcquirePeriod", 0.02), ("cam1:Acquire", 1)):
            pva.put(d + name, value, timeout=5)

    pva.put(p + "Run", "Run", timeout=5)
    wait_until(lambda: get("State_RBV") == "Running", STARTUP, "the pipeline running", ioc)
    acquire(100000)
    wait_until(lambda: get("State_RBV") == "Misfit", 60, "the misfit said", ioc)
    assert severity("Residual_RBV") >= 1 and severity("State_RBV") == 1
    message = get("Message_RBV")
    assert "unlike" in message and "ptychoedge train" in message, message
    residual = get("Residual_RBV")
    assert residual > 0.5, residual

    pva.put(p + "Model", "zoneplate", timeout=5)
    wait_until(lambda: get("Model_RBV") == "zoneplate", 60, "the fitting model in force", ioc)
    wait_until(lambda: severity("Residual_RBV") == 0, 60, "the residual's alarm cleared", ioc)
    assert get("Residual_RBV") < 0.5 * residual
    assert np.isfinite(get("Residual_RBV"))
    # The shipped network never saw a labyrinth: under the right probe it fits the frames'
    # mean and gives nearly one image for all of them, and the state stays Misfit for that
    wait_until(lambda: "explain" in get("Message_RBV"), 60, "the images' misfit said", ioc)
    assert get("State_RBV") == "Misfit" and severity("Explained_RBV") == 1
    explained = get("Explained_RBV")
    assert explained < 5, explained
    message = get("Message_RBV")
    assert "zoneplate's answers explain" in message and "Adapt" in message, message
    pva.put(d + "cam1:Acquire", 0, timeout=5)
    assert pva_ready(pva, p + "State_RBV")()


@pytest.mark.timeout(STARTUP + 240)
def test_images_that_do_not_tell_the_frames_apart_are_flagged_and_a_model_that_does_clears_it(
        spawn, pva, prefix, tmp_path):
    """Particles under the simulator's own probe: the residual stays low for both shipped
    models, but the default network never learnt particles and answers nearly one image
    for all of them; the folded network learnt them."""
    d, p = prefix, prefix.replace(":", "E:")
    start_sim(spawn, d, tmp_path, "--no-stage", "--sample", "particles")
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state")

    def get(name: str):
        return plain(pva.get(p + name, timeout=5))

    def severity(name: str) -> int:
        return pva.get(p + name, timeout=5)["alarm"]["severity"]

    pva.put(p + "Run", "Run", timeout=5)
    wait_until(lambda: get("State_RBV") == "Running", STARTUP, "the pipeline running", ioc)
    for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", 1500),
                        ("cam1:AcquirePeriod", 0.02), ("cam1:Acquire", 1)):
        pva.put(d + name, value, timeout=5)
    wait_until(lambda: get("State_RBV") == "Misfit", 60, "the misfit said", ioc)
    assert severity("Explained_RBV") == 1 and get("Explained_RBV") < 100 * EXPLAINS
    assert severity("Residual_RBV") == 0
    assert f"{DEFAULT_MODEL}'s answers explain" in get("Message_RBV")

    pva.put(p + "Model", "ptychonn-folded", timeout=5)
    wait_until(lambda: get("Model_RBV") == "ptychonn-folded", 60, "the folded model", ioc)
    wait_until(lambda: get("State_RBV") == "Running", 60, "the misfit cleared", ioc)
    assert severity("Explained_RBV") == 0 and severity("Residual_RBV") == 0
    wait_until(lambda: get("Backlog_RBV") == 0 and get("FramesProcessed_RBV") >= 1500, 120,
               "every frame published", ioc)
    assert get("FramesMissed_RBV") == 0 and get("State_RBV") == "Running"


@pytest.mark.timeout(STARTUP + 240)
def test_a_detector_with_gaps_is_flagged_until_the_model_knows_its_mask(
        spawn, pva, prefix, tmp_path):
    """The detector marks its module gaps with the pixel type's maximum: a model that takes
    them for counts is told apart by its residual; the same weights bundled with the
    detector's mask fit the frames as the shipped model fits a detector without gaps."""
    mask = gaps((128, 128))
    np.save(tmp_path / "mask.npy", mask)
    models = tmp_path / "models"
    copy_model(DEFAULT_MODEL, MODEL_DIR, models)
    model, shipped = load_model(DEFAULT_MODEL)
    save_model(model, Manifest.for_instrument(
        "gapped", shipped.shape, shipped.preprocessing,
        dataclasses.replace(shipped.instrument, mask=mask)), models)

    d, p = prefix, prefix.replace(":", "E:")
    start_sim(spawn, d, tmp_path, "--no-stage", "--mask", str(tmp_path / "mask.npy"))
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state", "--model-dir",
                    str(models))

    def get(name: str):
        return plain(pva.get(p + name, timeout=5))

    def severity(name: str) -> int:
        return pva.get(p + name, timeout=5)["alarm"]["severity"]

    pva.put(p + "Run", "Run", timeout=5)
    wait_until(lambda: get("State_RBV") == "Running", STARTUP, "the pipeline running", ioc)
    for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", 100000),
                        ("cam1:AcquirePeriod", 0.02), ("cam1:Acquire", 1)):
        pva.put(d + name, value, timeout=5)
    wait_until(lambda: get("State_RBV") == "Misfit", 60, "the misfit said", ioc)
    assert severity("Residual_RBV") == 2, get("Residual_RBV")
    assert "unlike" in get("Message_RBV")

    pva.put(p + "Model", "gapped", timeout=5)
    wait_until(lambda: get("Model_RBV") == "gapped", 60, "the model with the mask", ioc)
    wait_until(lambda: get("State_RBV") == "Running", 60, "the misfit cleared", ioc)
    minor = shipped.alarm_limits()[0]
    assert severity("Residual_RBV") == 0 and get("Residual_RBV") < minor / 2
    assert severity("Explained_RBV") == 0 and get("Explained_RBV") > 2 * 100 * EXPLAINS
    pva.put(d + "cam1:Acquire", 0, timeout=5)
