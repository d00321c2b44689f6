"""The Refine button: the kept frames' image, refined through the physics, served as
`$(P)Refined:*` by a real pipeline IOC on a simulated beamline, the probe refined with it
and written as an instrument file; refused with the reason before any frame came."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import pva_ready, start_ioc, start_sim, wait_until

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.comparison import compare_images
from ptychoedge.inference.instrument import Instrument, read_cxi, write_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
from ptychoedge.inference.refine import probe_overlap
from ptychoedge.pvdb import pipeline
from ptychoedge.sim import physics, scene
from ptychoedge.sim.probes import ZONE_PLATE, ZONE_PLATE_DEFOCUS, zone_plate_probe

pytestmark = pytest.mark.integration

STARTUP = 90  # s: instances load onnxruntime, on two shared cores
FRAMES = 150


@pytest.fixture
def line(spawn, pva, prefix, tmp_path, request):
    """A simulated beamline (the shipped model's own instrument, or the `ptychoedge sim`
    options given as the parameter) streaming into a running pipeline."""
    d, p = prefix, prefix.replace(":", "R:")
    start_sim(spawn, d, tmp_path, "--no-stage", *getattr(request, "param", ()))
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state")

    class Line:
        def get(self, name: str):
            return plain(pva.get(p + name, timeout=5))

        def put(self, name: str, value) -> None:
            pva.put(p + name, value, timeout=5)

        def unique_id(self, name: str) -> int:
            return pva.get(p + name, timeout=5)["uniqueId"]

        def where(self, name: str) -> tuple[float, tuple[int, int]]:
            """The image's object pixel (m) and the pixel of scan position 0."""
            value = pva.get(p + name, timeout=5)
            attributes = {a["name"]: a["value"] for a in value["attribute"]}
            return attributes["PixelSize"], (int(attributes["OriginX"]),
                                             int(attributes["OriginY"]))

        def image(self, name: str) -> tuple[int, np.ndarray]:
            value = pva.get(p + name, timeout=5)
            nx, ny = (dimension["size"] for dimension in value["dimension"])
            return value["uniqueId"], np.asarray(value["value"]).reshape(ny, nx)

        def wait(self, condition, timeout: float, what: str) -> None:
            wait_until(condition, timeout, what, ioc)

        def scan_and_refine(self, seconds: float) -> None:
            """Take FRAMES frames, wait until all are reconstructed, then Refine for
            `seconds` and wait until it is done."""
            self.put("RefineSeconds", seconds)
            for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", FRAMES),
                                ("cam1:AcquirePeriod", 0.02), ("cam1:Acquire", 1)):
                pva.put(d + name, value, timeout=5)
            self.wait(lambda: self.get("FramesProcessed_RBV") >= FRAMES
                      and self.get("Backlog_RBV") == 0, 120, "the scan reconstructed")
            self.put("Refine", 1)
            self.wait(lambda: self.get("RefineState_RBV") == "Refining", 60, "refining")
            self.wait(lambda: self.get("RefineState_RBV") == "Idle", 120, "the refinement done")

    line = Line()
    for image in pipeline.REFINED_IMAGES:
        line.wait(pva_ready(pva, p + image), 30, f"{image} served")
    line.put("Run", "Run")
    line.wait(lambda: line.get("State_RBV") == "Running", STARTUP, "the pipeline")
    return line


@pytest.mark.timeout(400)
def test_refine_shows_the_kept_frames_image_refined_through_the_physics(line):
    line.put("Refine", 1)  # nothing streamed yet: refused with the reason
    line.wait(lambda: line.get("RefineState_RBV") == "Failed", 30, "the refusal")
    assert "frames kept" in line.get("Message_RBV")
    assert line.unique_id("Refined:Phase") == 0  # nothing drawn

    line.scan_and_refine(4)
    message = line.get("Message_RBV")
    found = re.search(r"refined (\d+) frames .* Fourier error ([.\de-]+) -> ([.\de-]+)", message)
    assert found, message
    frames, first, last = int(found[1]), float(found[2]), float(found[3])
    assert frames == FRAMES and last < first
    # the probe, refined too, stayed the model's (it is the simulator's), and is written
    # with the geometry where the message says
    assert "the probe refined (overlap with the one given" in message
    refined = read_cxi(line.get("RefinedInstrument_RBV"))
    assert probe_overlap(refined.probe, load_manifest(DEFAULT_MODEL).instrument.probe) > 0.99
    assert line.get("RefineProgress_RBV") == 100
    assert line.get("RefineError_RBV") == pytest.approx(last, rel=1e-2)
    # two half-scans refined apart say what the frames resolve, from the pixel up
    resolution = line.get("RefinedResolution_RBV")
    assert f"resolved to {resolution:.0f} nm" in message
    pixel_nm = load_manifest(DEFAULT_MODEL).instrument.object_pixel_size * 1e9
    assert pixel_nm <= resolution < 10 * pixel_nm
    # the network's image first, then at least the refined one and its amplitude filtered
    shown, phase = line.image("Refined:Phase")
    assert shown >= 3
    _, amplitude = line.image("Refined:Amplitude")
    lit = amplitude > 0
    assert phase.shape == amplitude.shape and lit.mean() > 0.2
    # true to the sample the detector saw
    pixel, origin = line.where("Refined:Phase")
    instrument = load_manifest(DEFAULT_MODEL).instrument
    assert pixel == pytest.approx(instrument.object_pixel_size)
    simulator = physics.simulator_for(instrument)
    scores, _ = compare_images(amplitude, phase, lit, pixel, origin, simulator.sample,
                               simulator.pixel_size)
    print("refined image against the truth:", scores)
    assert scores["phase_correlation"] > 0.9 and scores["amplitude_correlation"] > 0.8
    # the live mosaic goes on beside it, untouched
    assert line.unique_id("Mosaic:Phase") == FRAMES

    # stopped while refining, the refiner goes on to the end; pressed while stopped, the
    # button is refused with the reason (the frame ring stops with the pipeline)
    line.put("Refine", 1)
    line.wait(lambda: line.get("RefineState_RBV") == "Refining", 60, "refining again")
    line.put("Run", "Stop")
    line.wait(lambda: line.get("RefineState_RBV") == "Idle", 120, "the refinement, stopped")
    assert line.get("State_RBV") == "Idle" and line.get("RefineProgress_RBV") == 100
    line.put("Refine", 1)
    line.wait(lambda: line.get("RefineState_RBV") == "Failed", 30, "refused while stopped")
    assert "pipeline running" in line.get("Message_RBV")


PROBE, SAMPLE = "zoneplate-defocus", "labyrinth"


@pytest.mark.parametrize("line", [("--probe", PROBE, "--sample", SAMPLE)], indirect=True,
                         ids=["another probe and sample"])
@pytest.mark.timeout(400)
def test_frames_unlike_the_model_are_refined_from_flat_with_the_beamline_probe(line,
                                                                                tmp_path):
    """The beamline knows its probe, as measured 30 um nearer the focus than it is now."""
    def zone_plate(defocus: float) -> Instrument:
        probe = zone_plate_probe(128, 1e-8, **ZONE_PLATE, defocus=defocus)
        return Instrument(physics.geometry(128), probe,
                          load_manifest(DEFAULT_MODEL).instrument.photons)

    known, now = zone_plate(ZONE_PLATE_DEFOCUS - 30e-6), zone_plate(ZONE_PLATE_DEFOCUS)
    instrument = tmp_path / "zoneplate.cxi"
    write_cxi(instrument, known)
    line.put("AdaptInstrument", str(instrument))
    line.scan_and_refine(8)
    message = line.get("Message_RBV")
    assert "from a flat object" in message  # the model's image misleads
    # the probe as the frames say it is now, ready for AdaptInstrument
    refined = read_cxi(line.get("RefinedInstrument_RBV"))
    before = probe_overlap(known.probe, now.probe)
    after = probe_overlap(refined.probe, now.probe)
    print(f"probe overlap with the true one: {before:.3f} given, {after:.3f} refined")
    assert after > before + 0.15
    pixel, origin = line.where("Refined:Phase")
    _, amplitude = line.image("Refined:Amplitude")
    _, phase = line.image("Refined:Phase")
    truth = scene.simulator(128, probe=PROBE, sample=SAMPLE)
    scores, _ = compare_images(amplitude, phase, amplitude > 0, pixel, origin, truth.sample,
                               truth.pixel_size)
    print("refined with the beamline's probe, against the truth:", scores)
    assert scores["phase_correlation"] > 0.9
    # a weak absorber's amplitude, shown filtered to what the half-scans agree on (seen:
    # 0.90; 0.77 as refined)
    assert scores["amplitude_correlation"] > 0.83
