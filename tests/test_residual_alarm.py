"""The fit guard on a real pipeline: frames of an instrument unlike the model's raise the
alarm on Residual_RBV and turn the state to Misfit with a plain message; a model made for
that instrument clears it. The same network under the right probe still cannot read the
sample: its images do not tell the frames apart, and the guard says so."""

from __future__ import annotations

import shutil

import numpy as np
from conftest import pva_ready, start_ioc, start_sim, wait_until

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.instrument import Instrument
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    Manifest,
    load_model,
    model_paths,
    save_model,
)
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe

STARTUP = 90  # s: instances load torch and onnxruntime, on two shared cores
PROBE = "zoneplate-defocus"


def test_frames_of_another_instrument_raise_the_alarm_and_a_model_for_it_clears_it(
        spawn, pva, prefix, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for kind, path in model_paths(DEFAULT_MODEL).items():
        shutil.copy(path, model_paths(DEFAULT_MODEL, models)[kind])
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
