"""The PtychoNN processor in a real pvapy-hpc-consumer, fed by the simulated detector."""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ptychoedge, pva_ready, wait_until

from ptychoedge.inference.manifest import Manifest, save_model
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.iocs.instances import SERVER_QUEUE
from ptychoedge.pvdb.processors import COLLECTOR_PROCESSOR, INSTANCE_PROCESSOR
from ptychoedge.sim import physics

INSTRUMENT = physics.default_instrument()

BAD_FRAMES_SERVER = Path(__file__).with_name("bad_frames_server.py")
DEEP_QUEUE = "record[queueSize=2000]"  # a subscriber on a busy machine must not drop outputs


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """Two small models of the shipped preprocessing, told apart by their weights."""
    directory = tmp_path / "models"
    for seed, name in enumerate(("small-a", "small-b")):
        torch.manual_seed(seed)
        shape = ModelShape(64, 4)
        save_model(PtychoNN(shape), Manifest.for_instrument(
            name, shape, Preprocessing(128, 64), INSTRUMENT), directory)
    (directory / "corrupt.pt").write_bytes(b"not weights")
    (directory / "corrupt.json").write_text(
        (directory / "small-a.json").read_text())  # its sha256 will not match
    return directory


class Instance:
    """One pvapy-hpc-consumer running the PtychoNN processor."""

    def __init__(self, spawn, ctx, input_channel: str, prefix: str, model_dir: Path, **config):
        self.ctx = ctx
        self.output = f"{prefix}recon:1"
        self.status = f"{prefix}recon:1:status"
        self.control = f"{prefix}recon:1:control"
        args = {"model": "small-a", "modelDir": str(model_dir), "backend": "torch",
                "batchSize": 4, **config}
        self.child = spawn(
            "pvapy-hpc-consumer", "--input-channel", input_channel,
            "--output-channel", self.output, "--status-channel", self.status,
            "--control-channel", self.control, "--processor-class", INSTANCE_PROCESSOR,
            "--processor-args", json.dumps(args),
            # as the pool starts them: a model load must not overrun pvAccess's queue
            "--server-queue-size", str(SERVER_QUEUE),
            "--report-period", "0.5", "--disable-curses", name="consumer")
        # a consumer loads torch and onnxruntime on two shared cores: in a fresh-clone run,
        # beside a busy test worker, its processor started only about a minute after it
        wait_until(pva_ready(ctx, self.status), 120, "consumer status channel", self.child)

    def stats(self) -> dict:
        status = self.ctx.get(self.status, timeout=5)
        return {**status["userStats"], "nProcessed": status["processorStats"]["nProcessed"],
                "nMissed": status["processorStats"]["nMissed"]}

    def configure(self, **config) -> None:
        self.ctx.put(self.control, {"command": "configure", "args": json.dumps(config)},
                     timeout=5)

    def wait_published(self, count: int, timeout: float = 60) -> None:
        wait_until(lambda: self.stats()["published"] >= count, timeout,
                   f"{count} outputs published", self.child)


def attributes(output) -> dict:
    return {a["name"]: a["value"] for a in output["attribute"]}


def collect(ctx, channel: str, unique_ids: set[int], start, timeout: float = 60
            ) -> dict[int, object]:
    """Outputs on `channel`, subscribed before `start()`, until all `unique_ids` arrived."""
    received: queue.Queue = queue.Queue()
    subscription = ctx.monitor(channel, received.put, request=DEEP_QUEUE)
    received.get(timeout=timeout)  # connected: the channel's current value
    start()
    outputs: dict[int, object] = {}
    try:
        while not unique_ids <= outputs.keys():
            output = received.get(timeout=timeout)
            outputs[output["uniqueId"]] = output
    finally:
        subscription.close()
    return outputs


@pytest.fixture
def detector(spawn, prefix, pva, tmp_path):
    child = spawn(*ptychoedge("sim", "--prefix", prefix, "--no-stage", "--log-dir",
                              str(tmp_path)), name="sim")
    wait_until(child.ready, 60, "simulated detector", child)
    return child


def image(ctx, name: str) -> np.ndarray:
    """An NTNDArray PV as a (rows, columns) array."""
    value = ctx.get(name, timeout=5)
    nx, ny = (d["size"] for d in value["dimension"])
    return np.asarray(value["value"]).reshape(ny, nx)


def put(ctx, name: str, value) -> None:
    ctx.put(name, value, timeout=5)


def acquire(ctx, prefix: str, frames: int, period: float) -> None:
    put(ctx, prefix + "cam1:ImageMode", "Multiple")
    put(ctx, prefix + "cam1:NumImages", frames)
    put(ctx, prefix + "cam1:AcquirePeriod", period)
    put(ctx, prefix + "cam1:Acquire", 1)


def start_instance(spawn, pva, prefix, model_dir, **config) -> Instance:
    instance = Instance(spawn, pva, prefix + "Pva1:Image", prefix, model_dir, **config)
    # One frame first: the output channel exists only once an output was published.
    put(pva, prefix + "cam1:ImageMode", "Single")
    put(pva, prefix + "cam1:Acquire", 1)
    instance.wait_published(1)
    return instance


def test_one_output_per_frame_with_its_id_and_position(detector, spawn, prefix, pva, model_dir):
    instance = start_instance(spawn, pva, prefix, model_dir)
    outputs = collect(pva, instance.output, set(range(2, 42)),
                      lambda: acquire(pva, prefix, 40, 0.01))
    expected = physics.fermat_spiral_positions(400, 0.25e-6)
    for unique_id in range(2, 42):
        output = outputs[unique_id]
        dims = [d["size"] for d in output["dimension"]]
        assert dims == [64, 64, 2]
        values = np.asarray(output["value"]).reshape(2, 64, 64)
        assert values.dtype == np.float32
        assert values[0].min() >= 0 and values[0].max() <= 1  # amplitude
        assert np.abs(values[1]).max() <= np.pi + 1e-6  # phase
        found = attributes(output)
        # A new acquisition starts the scan pattern again: frame 2 is point 0.
        assert (found["PosX"], found["PosY"]) == pytest.approx(tuple(expected[unique_id - 2]))
        assert found["Latency"] > 0 and found["Residual"] >= 0
        assert found["Model"] == "small-a"
        assert output["timeStamp"]["secondsPastEpoch"] > 0
    instance.wait_published(41)  # the status channel is refreshed every 0.5 s
    stats = instance.stats()
    assert stats["published"] == 41 and stats["errors"] == 0
    assert 0 < stats["batchFill"] <= 1 and stats["latencyP99"] >= stats["latencyP50"] > 0


def test_hot_swap_loses_no_frame(detector, spawn, prefix, pva, model_dir):
    instance = start_instance(spawn, pva, prefix, model_dir)
    frames = 300
    received: queue.Queue = queue.Queue()
    subscription = pva.monitor(instance.output, received.put, request=DEEP_QUEUE)
    acquire(pva, prefix, frames, 0.01)
    instance.wait_published(40)
    instance.configure(model="small-b", batchSize=8)
    instance.wait_published(frames + 1)
    models = {}

    def every_output_arrived() -> bool:
        while not received.empty():
            output = received.get()
            models[output["uniqueId"]] = attributes(output)["Model"]
        return set(range(2, frames + 2)) <= models.keys()
    wait_until(every_output_arrived, 30, "every output at the subscriber")
    subscription.close()
    stats = instance.stats()
    assert stats["published"] == frames + 1 == stats["nProcessed"]
    assert stats["nMissed"] == 0
    assert stats["errors"] == 0 and stats["model"] == "small-b" and stats["batchSize"] == 8
    # Every frame came out, first from the old model, then from the new one.
    assert set(range(2, frames + 2)) <= models.keys()
    switch = min(uid for uid, model in models.items() if model == "small-b")
    assert all(models[uid] == "small-a" for uid in range(2, switch))
    assert all(models[uid] == "small-b" for uid in range(switch, frames + 2))


@pytest.mark.parametrize("bad", [{"model": "missing"}, {"model": "corrupt"},
                                 {"model": "../small-a"}, {"backend": "no-such-backend"},
                                 {"batchSize": 0}, {"modelDir": "/tmp"}])
def test_bad_configuration_is_refused_and_the_model_stays(detector, spawn, prefix, pva,
                                                         model_dir, bad):
    instance = start_instance(spawn, pva, prefix, model_dir)
    instance.configure(**bad)
    wait_until(lambda: instance.stats()["configError"], 30, "the refusal", instance.child)
    acquire(pva, prefix, 10, 0.01)
    instance.wait_published(11)
    stats = instance.stats()
    assert stats["model"] == "small-a" and stats["batchSize"] == 4 and stats["errors"] == 0


def test_malformed_frames_are_counted_and_the_stream_goes_on(spawn, prefix, pva, model_dir,
                                                            tmp_path):
    channel = prefix + "bad:Image"
    go = tmp_path / "go"
    server = spawn(sys.executable, str(BAD_FRAMES_SERVER), channel, str(go), name="bad-frames")
    instance = Instance(spawn, pva, channel, prefix, model_dir)
    go.touch()
    wait_until(lambda: instance.stats()["published"] >= 4, 60, "the good frames",
               instance.child)
    wait_until(lambda: instance.stats()["errors"] >= 5, 30, "the bad frames", instance.child)
    stats = instance.stats()
    assert stats["published"] == 4  # three unsigned good frames and one signed
    assert stats["errors"] == 5
    assert stats["errors_rank"] == 2
    assert stats["errors_too_small"] == 1
    assert stats["errors_pixel_type"] == 1
    assert stats["errors_empty"] == 1
    assert instance.child.alive()
    server.stop()


def test_collector_stitches_two_instances_and_starts_again_with_a_new_scan(
        detector, spawn, prefix, pva, model_dir):
    instances = []
    for consumer_id in (1, 2):
        args = {"model": "small-a", "modelDir": str(model_dir), "batchSize": 4}
        instances.append(spawn(
            "pvapy-hpc-consumer", "--input-channel", prefix + "Pva1:Image",
            "--consumer-id", str(consumer_id), "--output-channel", f"{prefix}recon:{consumer_id}",
            "--status-channel", f"{prefix}recon:{consumer_id}:status",
            "--processor-class", INSTANCE_PROCESSOR,
            "--processor-args", json.dumps(args), "--distributor-group", "inference",
            "--distributor-updates", "1", "--distributor-trigger", "uniqueId",
            "--oid-offset", "2", "--report-period", "0.5", "--disable-curses", name="consumer"))
    collector = spawn(
        "pvapy-hpc-collector", "--input-channel", f"{prefix}recon:*", "--producer-id-list", "1,2",
        "--status-channel", prefix + "collector:status", "--processor-class",
        COLLECTOR_PROCESSOR, "--processor-args",
        json.dumps({"prefix": prefix, "model": "small-a", "modelDir": str(model_dir),
                    "displayRate": 10}),
        "--skip-initial-updates", "0", "--report-period", "0.5", "--disable-curses",
        name="collector")
    for consumer_id, child in enumerate(instances, start=1):
        wait_until(pva_ready(pva, f"{prefix}recon:{consumer_id}:status"), 60, "an instance",
                   child)
    wait_until(pva_ready(pva, prefix + "collector:status"), 60, "the collector", collector)

    def placed() -> int:
        return pva.get(prefix + "collector:status", timeout=5)["userStats"]["placed"]

    points = 60
    put(pva, prefix + "cam1:ScanPoints", points)
    acquire(pva, prefix, points, 0.01)
    wait_until(lambda: placed() == points, 60, "every patch placed", collector)
    positions = physics.fermat_spiral_positions(points, 0.25e-6)
    rows, columns = np.nonzero(image(pva, prefix + "Mosaic:Amplitude"))
    extent = np.ptp(positions, axis=0) / 1e-8 + 64  # scan span plus one patch, in pixels
    assert columns.max() - columns.min() + 1 == pytest.approx(extent[0], abs=2)
    assert rows.max() - rows.min() + 1 == pytest.approx(extent[1], abs=2)
    assert image(pva, prefix + "Recon:Amplitude").shape == (64, 64)
    assert image(pva, prefix + "Recon:Phase").shape == (64, 64)
    # Each instance did half the work (as its next report, up to 0.5 s on, says).
    for consumer_id, child in enumerate(instances, start=1):
        channel = f"{prefix}recon:{consumer_id}:status"
        wait_until(lambda c=channel: pva.get(c, timeout=5)["userStats"]["published"]
                   == points // 2, 10, f"instance {consumer_id} reporting half", child)

    # The detector starting again (uniqueId back to 1) starts a new mosaic.
    put(pva, prefix + "cam1:ArrayCounter", 0)
    acquire(pva, prefix, 10, 0.01)
    wait_until(lambda: placed() == points + 10, 60, "the new scan placed", collector)
    status = pva.get(prefix + "collector:status", timeout=5)["userStats"]
    assert status["scans"] == 2 and status["patches"] == 10
