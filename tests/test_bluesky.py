"""Bluesky against the real IOCs: the detector counted, and `ptycho_scan` reconstructed live.

One simulated beamline (detector and stage) and one pipeline IOC serve every test
here; the scan is a 6 x 6 raster at 0.25 um, a frame per point, reconstructed by
the pipeline while the stage moves, and its final mosaic is scored against the
simulator's ground truth at the positions the stage reported.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop
from conftest import Processes, instrument_with_probe, shipped_model_dir, start_ioc, start_sim
from ophyd_async.core import init_devices
from p4p.client.thread import Context

from ptychoedge.inference.evaluate import mosaic_of
from ptychoedge.inference.instrument import write_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
from ptychoedge.inference.metrics import ssim
from ptychoedge.inference.mosaic import Mosaic
from ptychoedge.pvdb.processors import EXPLAINS
from ptychoedge.sim import physics, scene

# ophyd-async's imports ask pyepics for epicscorelibs' libca; a pyepics already imported
# by another test module keeps its own, which works (tests/test_stage.py).
pytestmark = [pytest.mark.integration,  # the processes start in a module fixture
              pytest.mark.filterwarnings("ignore:epicscorelibs.path.pyepics must be imported")]

STARTUP = 150  # s: the pipeline's instance loads torch and onnxruntime on two shared cores
SIDE = 6  # raster points per side
STEP_UM = 0.25
# The shipped model on this raster, reconstructed offline from the same frames, scores
# mosaic SSIM 0.57 (amplitude) and 0.88 (phase), correlation 0.83 and 0.81; an untrained
# model scores below every bar (tests/test_evaluate.py). The bars are test_evaluate's.
MOSAIC_AMPLITUDE_SSIM = 0.5
MOSAIC_PHASE_SSIM = 0.8
MOSAIC_CORRELATION = 0.7
# A beamline unlike the shipped model's, which adaptation learns (tests/test_adaptation.py)
ADAPT_PROBE = "zoneplate-defocus"
ADAPT_POINTS = 120
ADAPT_EPOCHS = 25  # a fresh network tells the frames apart after that many (MODELS.md)
ADAPT_TIMEOUT = 600  # s: those epochs on one nice'd thread, on two shared cores


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    """`ptychoedge sim` (detector and stage) and `ptychoedge ioc`, on prefixes of their own."""
    logs = tmp_path_factory.mktemp("bluesky")
    d = f"B{uuid.uuid4().hex[:8]}:"
    p = d.replace(":", "E:")
    processes = Processes(logs)
    ctx = Context("pva", nt=False)
    try:
        start_sim(processes.start, d, logs)
        ioc = start_ioc(processes.start, ctx, p, d + "Pva1:Image", logs / "state")
        yield d, p, ioc
    finally:
        ctx.close()
        processes.stop()


@pytest.fixture(scope="module")
def devices(beamline):
    # Imported here, not at collection: aioca's libca, loaded but not yet used, stops
    # pyepics' connection callbacks in tests that run before this one.
    from ptychoedge.scans import Pipeline, SimDetector, stage_motors

    d, p, _ = beamline
    engine = RunEngine({})
    with init_devices():
        detector = SimDetector(d, read_frames=True)
        pipeline = Pipeline(p)
        x, y = stage_motors(d)
    yield engine, detector, pipeline, x, y
    forget_channels()


@pytest.fixture(scope="module")
def adapting_beamline(tmp_path_factory):
    """A stage over a labyrinth lit by a zone plate, into a pipeline running the shipped
    model (made for another probe) from a model directory of its own, set to adapt on
    ADAPT_POINTS frames for ADAPT_EPOCHS epochs; its devices and that directory."""
    from ptychoedge.scans import Pipeline, SimDetector, stage_motors

    logs = tmp_path_factory.mktemp("adapting")
    models = shipped_model_dir(logs / "models")
    instrument = logs / "zoneplate.cxi"  # what the beamline knows of its probe
    write_cxi(instrument, instrument_with_probe(ADAPT_PROBE))
    d = f"A{uuid.uuid4().hex[:8]}:"
    p = d.replace(":", "E:")
    processes = Processes(logs)
    ctx = Context("pva", nt=False)
    try:
        start_sim(processes.start, d, logs, "--probe", ADAPT_PROBE, "--sample", "labyrinth")
        start_ioc(processes.start, ctx, p, d + "Pva1:Image", logs / "state", "--model-dir",
                  str(models))
        for name, value in (("AdaptInstrument", str(instrument)),
                            ("AdaptFrames", ADAPT_POINTS), ("AdaptEpochs", ADAPT_EPOCHS)):
            ctx.put(p + name, value, timeout=5)
        engine = RunEngine({})
        with init_devices():
            detector = SimDetector(d)
            pipeline = Pipeline(p)
            x, y = stage_motors(d)
        yield engine, detector, pipeline, x, y, models
        forget_channels()
    finally:
        ctx.close()
        processes.stop()


def forget_channels() -> None:
    from aioca import purge_channel_caches

    async def purge() -> None:  # before the loop closes, or libca calls back into it
        purge_channel_caches()

    call_in_bluesky_event_loop(purge())


def documents(engine: RunEngine, plan) -> dict[str, list[dict]]:
    collected: dict[str, list[dict]] = defaultdict(list)
    engine(plan, lambda name, doc: collected[name].append(doc))
    return collected


def events_by_stream(docs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    streams = {descriptor["uid"]: descriptor["name"] for descriptor in docs["descriptor"]}
    by_stream: dict[str, list[dict]] = defaultdict(list)
    for event in docs["event"]:
        by_stream[streams[event["descriptor"]]].append(event)
    return by_stream


@pytest.mark.timeout(120)
def test_the_detector_is_triggered_and_counted(devices):
    engine, detector, _, _, _ = devices
    docs = documents(engine, bp.count([detector], num=3))
    assert docs["stop"][0]["exit_status"] == "success"
    events = events_by_stream(docs)["primary"]
    counters = [event["data"]["detector-driver-array_counter"] for event in events]
    assert len(counters) == 3
    assert np.diff(counters).tolist() == [1, 1]  # one frame per trigger
    frame = np.asarray(events[-1]["data"]["detector-image"])
    assert frame.shape == (128, 128) and frame.sum() > 0
    configuration = docs["descriptor"][0]["configuration"]["detector"]["data"]
    assert configuration["detector-driver-manufacturer"] == "ptychoedge"


@pytest.mark.timeout(STARTUP + 120)
def test_ptycho_scan_is_reconstructed_live_with_no_frame_lost(devices):
    from ptychoedge.scans import ptycho_scan

    engine, detector, pipeline, x, y = devices
    docs = documents(engine, ptycho_scan(
        detector, x, y, pipeline, pattern="raster", points=SIDE * SIDE, step_um=STEP_UM,
        model="ptychonn-default", target_rate=20.0, auto_scale=False,
        ready_timeout=STARTUP))
    (start,), (stop,) = docs["start"], docs["stop"]
    assert stop["exit_status"] == "success", stop.get("reason")
    assert start["plan_name"] == "ptycho_scan" and start["num_points"] == SIDE * SIDE
    assert stop["num_events"] == {"primary": SIDE * SIDE, "final": 1}

    streams = events_by_stream(docs)
    primary = streams["primary"]
    counters = [event["data"]["detector-driver-array_counter"] for event in primary]
    assert counters == list(range(1, SIDE * SIDE + 1))  # a fresh mosaic, one frame a point
    for key in ("pipeline-input_rate", "pipeline-processed_rate", "pipeline-frames_missed"):
        assert key in primary[0]["data"]
    configuration = next(d for d in docs["descriptor"] if d["name"] == "primary")[
        "configuration"]["pipeline"]["data"]
    assert configuration["pipeline-model"] == "ptychonn-default"
    assert configuration["pipeline-target_rate"] == 20.0
    assert configuration["pipeline-auto_scale"] == "Off"

    (final,) = streams["final"]
    data = final["data"]
    assert data["pipeline-frames_missed"] == start["frames_missed_before"] == 0
    assert data["pipeline-frames_processed"] - start["frames_processed_before"] == SIDE * SIDE
    assert data["pipeline-state"] == "Running"
    # the fit guard's figures are in the run, beside the images they vouch for: the frames
    # fit the model, and its images tell them apart (a flat image would explain none)
    assert 0 <= data["pipeline-residual"] < 0.5
    assert data["pipeline-explained"] >= 100 * EXPLAINS, data["pipeline-explained"]
    # beside them, how well neighbouring images agree (judged from 96 patches: a 36-point
    # scan is too few to say)
    assert "pipeline-agreement" in data

    # The final mosaic against the truth, stitched the same way at the stage's readbacks
    positions = np.array([[event["data"]["x"], event["data"]["y"]] for event in primary])
    np.testing.assert_allclose(positions, start["scan_positions_um"], atol=1e-3)
    manifest = load_manifest("ptychonn-default")
    simulator = physics.simulator_for(manifest.instrument)
    truth_patches = manifest.preprocessing.targets(
        simulator.object_patches(positions * 1e-6))
    truth = mosaic_of(truth_patches, positions * 1e-6, manifest)
    amplitude = np.asarray(data["pipeline-images-mosaic_amplitude"])
    phase = np.asarray(data["pipeline-images-mosaic_phase"])
    scores = mosaic_scores(amplitude, phase, truth)
    print("mosaic scores against the truth:", scores)
    assert scores["amplitude_ssim"] > MOSAIC_AMPLITUDE_SSIM, scores
    assert scores["phase_ssim"] > MOSAIC_PHASE_SSIM, scores
    assert scores["amplitude_correlation"] > MOSAIC_CORRELATION, scores
    assert scores["phase_correlation"] > MOSAIC_CORRELATION, scores


@pytest.mark.timeout(STARTUP + 120)
def test_each_scan_reports_its_own_frames(devices):
    from ptychoedge.scans import ptycho_scan

    engine, detector, pipeline, x, y = devices
    finals = []
    for _ in range(2):
        docs = documents(engine, ptycho_scan(detector, x, y, pipeline, pattern="raster",
                                             points=9, step_um=STEP_UM, ready_timeout=STARTUP))
        assert docs["stop"][0]["exit_status"] == "success", docs["stop"][0].get("reason")
        finals.append(events_by_stream(docs)["final"][0]["data"])
    for data in finals:
        assert (data["scan-frames_processed"], data["scan-frames_missed"]) == (9, 0), data
    # the IOC's counters run on over both scans
    assert finals[1]["pipeline-frames_processed"] >= finals[0]["pipeline-frames_processed"] + 9


@pytest.mark.timeout(STARTUP + 180)
def test_ptycho_scan_refines_the_image_and_records_it(devices):
    from ptychoedge.scans import ptycho_scan

    engine, detector, pipeline, x, y = devices
    docs = documents(engine, ptycho_scan(detector, x, y, pipeline, pattern="raster",
                                         points=SIDE * SIDE, step_um=STEP_UM,
                                         ready_timeout=STARTUP, refine=True, refine_seconds=3))
    (start,), (stop,) = docs["start"], docs["stop"]
    assert stop["exit_status"] == "success", stop.get("reason")
    assert start["plan_args"]["refine"] is True and start["plan_args"]["refine_seconds"] == 3
    assert stop["num_events"] == {"primary": SIDE * SIDE, "final": 1, "refinement": 1}
    (refinement,) = events_by_stream(docs)["refinement"]
    data = refinement["data"]
    assert data["pipeline-refine_state"] == "Idle"
    configuration = next(d for d in docs["descriptor"] if d["name"] == "refinement")[
        "configuration"]["pipeline"]["data"]
    assert configuration["pipeline-refine_seconds"] == 3
    assert 0 < data["pipeline-refine_error"] < 1
    assert Path(data["pipeline-refined_instrument"]).is_file()  # the probe, refined too
    assert data["pipeline-refined_resolution"] >= 10  # nm: the object pixel at best
    amplitude = np.asarray(data["pipeline-refined_images-refined_amplitude"])
    phase = np.asarray(data["pipeline-refined_images-refined_phase"])
    lit = amplitude > 0
    assert phase.shape == amplitude.shape and lit.sum() > 1000
    assert np.std(phase[lit]) > 0.01  # the sample, not a flat image


@pytest.mark.timeout(STARTUP + 120 + ADAPT_TIMEOUT)
def test_ptycho_scan_adapts_the_model_to_the_scan_and_records_what_it_did(adapting_beamline):
    from ptychoedge.scans import ptycho_scan

    engine, detector, pipeline, x, y, models = adapting_beamline
    docs = documents(engine, ptycho_scan(
        detector, x, y, pipeline, pattern="spiral", points=ADAPT_POINTS, step_um=STEP_UM,
        model=DEFAULT_MODEL, target_rate=20.0, auto_scale=False, ready_timeout=STARTUP,
        adapt=True, adapt_timeout=ADAPT_TIMEOUT, model_dir=models))
    (start,), (stop,) = docs["start"], docs["stop"]
    assert stop["exit_status"] == "success", stop.get("reason")
    assert start["plan_args"]["adapt"] is True
    streams = events_by_stream(docs)
    assert len(streams["primary"]) == ADAPT_POINTS and len(streams["final"]) == 1

    (result,) = streams["adaptation"]
    data = result["data"]
    print({key: value for key, value in data.items() if key.startswith("adaptation-")})
    adapted = f"{DEFAULT_MODEL}-adapted-1"
    assert data["adaptation-outcome"] == "kept", data["adaptation-message"]
    assert data["adaptation-model_before"] == DEFAULT_MODEL
    assert data["adaptation-adapted_model"] == data["adaptation-model_after"] == adapted
    configuration = next(descriptor for descriptor in docs["descriptor"]
                         if descriptor["name"] == "adaptation")["configuration"]["pipeline"]
    assert configuration["data"]["pipeline-model"] == adapted  # the knob's readback
    assert adapted in data["adaptation-message"]
    lineage = json.loads(data["adaptation-lineage"])
    assert lineage["source"] == str(models / f"{adapted}.json")
    assert lineage["parent"]["name"] == DEFAULT_MODEL and lineage["check"]["accepted"]
    # before: the shipped model on this scan, live; after: the new model's own figure
    residual_before, residual_after = (data["adaptation-residual_before"],
                                       data["adaptation-residual_after"])
    assert residual_before > 0
    assert residual_after == pytest.approx(
        load_manifest(adapted, models).validation["residual_p50"])
    assert "validation residual_p50" in data["adaptation-residual_after_source"]
    assert residual_after < residual_before

    # the scan on the screen, redrawn by the new model, is truer than the shipped model's
    positions = np.array([[e["data"]["x"], e["data"]["y"]] for e in streams["primary"]]) * 1e-6
    simulator = scene.simulator(128, ADAPT_PROBE, sample="labyrinth")  # the sim's

    def scores(images: dict, model: str) -> dict[str, float]:
        manifest = load_manifest(model, models)
        truth = mosaic_of(manifest.preprocessing.targets(simulator.object_patches(positions)),
                          positions, manifest)
        return mosaic_scores(np.asarray(images["pipeline-images-mosaic_amplitude"]),
                             np.asarray(images["pipeline-images-mosaic_phase"]), truth)
    before, after = scores(streams["final"][0]["data"], DEFAULT_MODEL), scores(data, adapted)
    print("mosaic against the truth, before and after:", before, after)
    assert after["phase_correlation"] > max(0.2, before["phase_correlation"] + 0.2)

    # the plan waited: it read the adaptation at work, and recorded it once it had ended
    states = [event["data"]["pipeline-adapt_state"] for event in streams["adapting"]]
    assert "Training" in states and states[-1] == "Idle", states
    assert data["pipeline-adapt_state"] == "Idle"
    assert result["time"] >= max(event["time"] for event in streams["adapting"])


def mosaic_scores(amplitude: np.ndarray, phase: np.ndarray, truth: Mosaic) -> dict[str, float]:
    """SSIM and correlation over the well-lit pixels, as `ptychoedge evaluate` scores."""
    want_amplitude, want_phase = truth.images()
    # Same patches, same order, same canvas growth: the two canvases line up exactly.
    assert amplitude.shape == want_amplitude.shape, (amplitude.shape, want_amplitude.shape)
    covered = truth.coverage()
    rows, cols = np.nonzero(covered)
    window = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    mask = covered[window]
    result = {}
    for name, got, want, data_range in (("amplitude", amplitude, want_amplitude, 1.0),
                                        ("phase", phase, want_phase, 2 * np.pi)):
        got, want = got[window], want[window]
        result[f"{name}_ssim"] = ssim(got, want, data_range, mask)
        result[f"{name}_correlation"] = float(np.corrcoef(got[mask], want[mask])[0, 1])
    return result


def test_scan_positions():
    from ptychoedge.scans import scan_positions

    raster = scan_positions("raster", 7, 0.5, centre_um=(1.0, -2.0))
    assert raster.shape == (7, 2)
    np.testing.assert_allclose(raster[:3], [[0.5, -2.5], [1.0, -2.5], [1.5, -2.5]])
    spiral = scan_positions("spiral", 50, 0.25)
    assert spiral.shape == (50, 2)
    np.testing.assert_allclose(spiral.mean(axis=0), 0.0, atol=1e-9)
    nearest = np.sort(np.linalg.norm(spiral[:, None] - spiral[None], axis=-1), axis=1)[:, 1]
    assert 0.15 < np.median(nearest) < 0.35  # neighbours about a step apart
    for bad in (("zigzag", 5, 0.25), ("raster", 0, 0.25), ("spiral", 5, 0.0)):
        with pytest.raises(ValueError):
            scan_positions(*bad)
