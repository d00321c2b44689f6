"""The fit guard on a real pipeline: frames of an instrument unlike the model's raise the
alarm on Residual_RBV and turn the state to Misfit with a plain message; a model made for
that instrument clears it. A network that cannot read the sample gives images that do
not tell the frames apart: Explained_RBV alarms and the state is Misfit, until a model
that learnt such samples runs. Frames of a detector with module gaps alarm until the
model knows the detector's mask. Frames whose positions are out of step with them fit one
by one, but their images disagree where they overlap, until the positions are right."""

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
    load_manifest,
    load_model,
    save_model,
)
from ptychoedge.inference.scan_file import save_scan
from ptychoedge.pvdb.processors import AGREES, EXPLAINS
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe

STARTUP = 90  # s: instances load torch and onnxruntime, on two shared cores
PROBE = "zoneplate-defocus"


class Line:
    """A simulated detector (`sim_args`) streaming into a pipeline IOC, for one test."""

    def __init__(self, spawn, pva, prefix: str, tmp_path, sim_args: tuple[str, ...],
                 *ioc_args: str):
        self.pva, self.d, self.p = pva, prefix, prefix.replace(":", "E:")
        start_sim(spawn, self.d, tmp_path, "--no-stage", *sim_args)
        self.ioc = start_ioc(spawn, pva, self.p, self.d + "Pva1:Image", tmp_path / "state",
                             *ioc_args)

    def get(self, name: str):
        return plain(self.pva.get(self.p + name, timeout=5))

    def severity(self, name: str) -> int:
        return self.pva.get(self.p + name, timeout=5)["alarm"]["severity"]

    def wait(self, condition, seconds: float, what: str) -> None:
        wait_until(condition, seconds, what, self.ioc)

    def run_and_acquire(self, frames: int) -> None:
        self.pva.put(self.p + "Run", "Run", timeout=5)
        self.wait(lambda: self.get("State_RBV") == "Running", STARTUP, "the pipeline running")
        for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", frames),
                            ("cam1:AcquirePeriod", 0.02), ("cam1:Acquire", 1)):
            self.pva.put(self.d + name, value, timeout=5)

    def use_model(self, model: str) -> None:
        self.pva.put(self.p + "Model", model, timeout=5)
        self.wait(lambda: self.get("Model_RBV") == model, 60, f"{model} in force")


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
    line = Line(spawn, pva, prefix, tmp_path, ("--probe", PROBE, "--sample", "labyrinth"),
                "--model-dir", str(models))
    line.run_and_acquire(100000)
    line.wait(lambda: line.get("State_RBV") == "Misfit", 60, "the misfit said")
    assert line.severity("Residual_RBV") >= 1 and line.severity("State_RBV") == 1
    message = line.get("Message_RBV")
    assert "unlike" in message and "ptychoedge train" in message, message
    residual = line.get("Residual_RBV")
    assert residual > 0.5, residual

    line.use_model("zoneplate")
    line.wait(lambda: line.severity("Residual_RBV") == 0, 60, "the residual's alarm cleared")
    assert line.get("Residual_RBV") < 0.5 * residual
    assert np.isfinite(line.get("Residual_RBV"))
    # The shipped network never saw a labyrinth: under the right probe it fits the frames'
    # mean and gives nearly one image for all of them, and the state stays Misfit for that
    line.wait(lambda: "explain" in line.get("Message_RBV"), 60, "the images' misfit said")
    assert line.get("State_RBV") == "Misfit" and line.severity("Explained_RBV") == 1
    explained = line.get("Explained_RBV")
    assert explained < 5, explained
    message = line.get("Message_RBV")
    assert "zoneplate's answers explain" in message and "Adapt" in message, message
    pva.put(line.d + "cam1:Acquire", 0, timeout=5)
    assert pva_ready(pva, line.p + "State_RBV")()


@pytest.mark.timeout(STARTUP + 240)
def test_images_that_do_not_tell_the_frames_apart_are_flagged_and_a_model_that_does_clears_it(
        spawn, pva, prefix, tmp_path):
    """Particles under the simulator's own probe: the residual stays low for both shipped
    models, but the default network never learnt particles and answers nearly one image
    for all of them; the folded network learnt them."""
    line = Line(spawn, pva, prefix, tmp_path, ("--sample", "particles"))
    line.run_and_acquire(1500)
    line.wait(lambda: line.get("State_RBV") == "Misfit", 60, "the misfit said")
    assert line.severity("Explained_RBV") == 1 and line.get("Explained_RBV") < 100 * EXPLAINS
    assert line.severity("Residual_RBV") == 0
    assert f"{DEFAULT_MODEL}'s answers explain" in line.get("Message_RBV")

    line.use_model("ptychonn-folded")
    line.wait(lambda: line.get("State_RBV") == "Running", 60, "the misfit cleared")
    assert line.severity("Explained_RBV") == 0 and line.severity("Residual_RBV") == 0
    line.wait(lambda: line.get("Backlog_RBV") == 0 and line.get("FramesProcessed_RBV") >= 1500,
              120, "every frame published")
    assert line.get("FramesMissed_RBV") == 0 and line.get("State_RBV") == "Running"


@pytest.mark.timeout(STARTUP + 240)
def test_a_detector_with_gaps_is_flagged_until_the_model_knows_its_mask(
        spawn, pva, prefix, tmp_path):
    """The detector marks its module gaps with the pixel type's maximum: a model that takes
    them for counts is told apart by its residual, and the message names the gaps; the
    same weights bundled with the detector's mask fit the frames as the shipped model fits
    a detector without gaps."""
    mask = gaps((128, 128))
    np.save(tmp_path / "mask.npy", mask)
    models = tmp_path / "models"
    copy_model(DEFAULT_MODEL, MODEL_DIR, models)
    model, shipped = load_model(DEFAULT_MODEL)
    save_model(model, Manifest.for_instrument(
        "gapped", shipped.shape, shipped.preprocessing,
        dataclasses.replace(shipped.instrument, mask=mask)), models)
    line = Line(spawn, pva, prefix, tmp_path, ("--mask", str(tmp_path / "mask.npy")),
                "--model-dir", str(models))
    line.run_and_acquire(100000)
    line.wait(lambda: line.get("State_RBV") == "Misfit", 60, "the misfit said")
    assert line.severity("Residual_RBV") == 2, line.get("Residual_RBV")
    message = line.get("Message_RBV")
    assert f"{mask.sum()} pixels of each are no counts" in message, message
    assert "ptychoedge train --mask" in message

    line.use_model("gapped")
    line.wait(lambda: line.get("State_RBV") == "Running", 60, "the misfit cleared")
    line.wait(lambda: line.get("Explained_RBV") > 0, 60, "the new model's share said")
    minor = shipped.alarm_limits()[0]
    assert line.severity("Residual_RBV") == 0 and line.get("Residual_RBV") < minor / 2
    assert line.severity("Explained_RBV") == 0 and line.get("Explained_RBV") > 2 * 100 * EXPLAINS
    pva.put(line.d + "cam1:Acquire", 0, timeout=5)


@pytest.mark.timeout(STARTUP + 240)
def test_positions_out_of_step_with_the_frames_are_flagged_until_they_are_right(
        spawn, pva, prefix, tmp_path):
    """A recorded scan replayed with each frame given the next frame's position (a stage
    read one frame late): every frame fits the model and the images tell the frames
    apart, but neighbouring images disagree where they overlap."""
    instrument = load_manifest(DEFAULT_MODEL).instrument
    simulator = physics.simulator_for(instrument, seed=7, sample_shape=(640, 640))
    positions = physics.fermat_spiral_positions(300, 0.25e-6)
    frames, _ = simulator.frames(positions)
    save_scan(tmp_path / "late.npz", frames, np.roll(positions, -1, axis=0))
    save_scan(tmp_path / "right.npz", frames, positions)
    line = Line(spawn, pva, prefix, tmp_path,
                ("--source", "Replay", "--replay", str(tmp_path / "late.npz")))
    line.run_and_acquire(100000)
    line.wait(lambda: line.get("State_RBV") == "Misfit", 60, "the misfit said")
    assert line.severity("Agreement_RBV") == 1 and line.get("Agreement_RBV") < 100 * AGREES
    assert line.severity("Residual_RBV") == 0 and line.severity("Explained_RBV") == 0
    message = line.get("Message_RBV")
    assert "neighbouring images disagree" in message and "positions" in message, message

    # the scan again with the right positions: a new scan (uniqueId from 1), a new mosaic
    right = str(tmp_path / "right.npz")
    pva.put(line.d + "cam1:Acquire", 0, timeout=5)
    line.wait(lambda: plain(pva.get(line.d + "cam1:Acquire_RBV", timeout=5)) == "Done", 30,
              "the acquisition stopped")
    for name, value in (("cam1:ReplayFile", right), ("cam1:ArrayCounter", 0)):
        pva.put(line.d + name, value, timeout=5)
    line.wait(lambda: plain(pva.get(line.d + "cam1:ReplayFile_RBV", timeout=5)) == right, 30,
              "the right positions loaded")
    pva.put(line.d + "cam1:Acquire", 1, timeout=5)
    line.wait(lambda: line.get("State_RBV") == "Running", 60, "the misfit cleared")
    line.wait(lambda: line.get("Agreement_RBV") > 100 * AGREES, 30, "the images agreeing")
    assert line.severity("Agreement_RBV") == 0
    pva.put(line.d + "cam1:Acquire", 0, timeout=5)
