"""The simulated detector over the wire: control over CA and PVA, frames to real clients."""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path

import epics
import numpy as np
import pytest
from caproto import ChannelType
from caproto.sync.client import write as ca_write
from conftest import ptychoedge, pva_ready, wait_until

from ptychoedge.inference.scan_file import save_scan
from ptychoedge.sim import physics

RECORDER = Path(__file__).with_name("frame_recorder.py")


class Detector:
    """A running `ptychoedge sim` and the client-side helpers the tests share."""

    def __init__(self, prefix: str, child, ctx):
        self.prefix = prefix
        self.child = child
        self.ctx = ctx

    def pv(self, name: str) -> str:
        return self.prefix + name

    def get(self, name: str):
        return self.ctx.get(self.pv(name), timeout=5.0)

    def put(self, name: str, value) -> None:
        self.ctx.put(self.pv(name), value, timeout=5.0)

    def value(self, name: str):
        return self.get(name)["value"]

    def counter(self) -> int:
        return self.value("cam1:ArrayCounter_RBV")

    def state(self) -> str:
        value = self.value("cam1:DetectorState_RBV")
        return value["choices"][value["index"]]

    def wait_for(self, condition, what: str, timeout: float = 20.0):
        return wait_until(condition, timeout, what, self.child)

    def wait_counting(self, more_than: int = 0) -> int:
        return self.wait_for(lambda: self.counter() > more_than and self.counter(),
                             f"ArrayCounter_RBV above {more_than}")

    def wait_idle(self) -> None:
        self.wait_for(lambda: self.state() == "Idle"
                      and self.value("cam1:Acquire_RBV")["index"] == 0, "detector idle")


@pytest.fixture
def start_detector(spawn, prefix, pva, tmp_path):
    def start(*extra: str) -> Detector:
        child = spawn(*ptychoedge("sim", "--prefix", prefix, "--log-dir", str(tmp_path), *extra),
                      name="sim")
        detector = Detector(prefix, child, pva)
        detector.wait_for(pva_ready(pva, prefix + "cam1:DetectorState_RBV"), "control IOC")
        detector.wait_for(child.ready, "beamline configured", 60.0)
        return detector
    return start


@pytest.fixture
def detector(start_detector) -> Detector:
    return start_detector("--no-stage")


def monitor_frames(detector: Detector, count: int) -> list:
    """The next `count` frames on Pva1:Image, through a p4p monitor whose server-side queue
    holds a burst (the default 4 squashes frames while the test's process waits for a core)."""
    frames: queue.Queue = queue.Queue()
    subscription = detector.ctx.monitor(detector.pv("Pva1:Image"), frames.put,
                                        request="record[queueSize=100]field()")
    received = []
    try:
        while len(received) < count:
            frame = frames.get(timeout=20.0)
            if frame["uniqueId"] > 0:  # the record's initial, empty value is not a frame
                received.append(frame)
    finally:
        subscription.close()
    return received


def frame_position(frame) -> tuple[float, float]:
    attributes = {a["name"]: a["value"] for a in frame["attribute"]}
    return attributes["PosX"], attributes["PosY"]


def test_caput_starts_stops_and_sets_period(detector):
    pv = detector.pv
    assert epics.caput(pv("cam1:AcquirePeriod"), 0.01, wait=True, timeout=5)
    detector.wait_for(lambda: epics.caget(pv("cam1:AcquirePeriod_RBV")) == pytest.approx(0.01),
                      "AcquirePeriod_RBV over CA")
    assert epics.caput(pv("cam1:Acquire"), 1, wait=True, timeout=5)
    detector.wait_for(lambda: epics.caget(pv("cam1:Acquire_RBV")) == 1, "Acquire_RBV = 1")
    first = detector.wait_counting()
    detector.wait_counting(first + 20)
    # The rate readback follows the period: 100 Hz, not the default 1 kHz.
    rate = detector.wait_for(lambda: epics.caget(pv("cam1:ArrayRate_RBV")) or None, "a rate")
    assert 20 < rate < 200
    assert epics.caput(pv("cam1:Acquire"), 0, wait=True, timeout=5)
    detector.wait_idle()
    stopped_at = detector.counter()
    assert detector.counter() == stopped_at == epics.caget(pv("cam1:ArrayCounter_RBV"))


def test_pvput_starts_stops_and_sets_period(detector):
    detector.put("cam1:AcquirePeriod", 0.02)
    detector.wait_for(lambda: detector.value("cam1:AcquirePeriod_RBV") == pytest.approx(0.02),
                      "AcquirePeriod_RBV over PVA")
    detector.put("cam1:Acquire", "Acquire")
    detector.wait_for(lambda: detector.value("cam1:Acquire_RBV")["index"] == 1, "Acquire_RBV")
    detector.wait_counting(10)
    rate = detector.wait_for(lambda: detector.value("cam1:ArrayRate_RBV") or None, "a rate")
    assert 10 < rate < 100
    detector.put("cam1:Acquire", 0)
    detector.wait_idle()
    assert detector.value("cam1:Acquire")["index"] == 0


def test_p4p_monitor_gets_ntndarray_frames_along_the_scan(detector):
    detector.put("cam1:SizeX", 96)
    detector.put("cam1:SizeY", 64)
    detector.put("cam1:ScanPattern", "Raster")
    detector.put("cam1:ScanPoints", 9)
    detector.put("cam1:ScanStep", 0.5)
    detector.put("cam1:AcquirePeriod", 0.005)
    detector.put("cam1:Acquire", 1)
    frames = monitor_frames(detector, 30)
    detector.put("cam1:Acquire", 0)

    ids = [frame["uniqueId"] for frame in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    expected = physics.raster_positions(3, 3, 0.5e-6)
    for frame in frames:
        dims = frame["dimension"]
        assert (dims[0]["size"], dims[1]["size"]) == (96, 64)  # dimension[0] is x
        assert frame["value"].dtype == np.uint16 and frame["value"].size == 96 * 64
        attributes = {a["name"]: a for a in frame["attribute"]}
        assert attributes["ColorMode"]["value"] == 0
        assert "(m)" in attributes["PosX"]["descriptor"]
        assert frame["timeStamp"]["secondsPastEpoch"] > 0
        assert frame["dataTimeStamp"]["secondsPastEpoch"] > 0
        # The first acquisition starts the pattern at uniqueId 1.
        assert frame_position(frame) == pytest.approx(
            tuple(expected[(frame["uniqueId"] - 1) % 9]), abs=1e-12)
    assert detector.value("cam1:ArraySizeX_RBV") == 96
    assert detector.value("cam1:ArraySizeY_RBV") == 64


def test_pvapy_consumer_receives_every_frame(detector, spawn, tmp_path):
    record = tmp_path / "frames.jsonl"
    consumer = spawn(
        "pvapy-hpc-consumer", "--input-channel", detector.pv("Pva1:Image"),
        "--processor-file", str(RECORDER), "--processor-class", "FrameRecorder",
        "--processor-args", json.dumps({"path": str(record)}),
        "--status-channel", detector.pv("test:consumer:status"), "--report-period", "1",
        # without a server-side queue a client loses frames whenever it is descheduled
        "--server-queue-size", "100", "--disable-curses", name="consumer")
    detector.wait_for(pva_ready(detector.ctx, detector.pv("test:consumer:status")),
                      "consumer status channel")
    detector.put("cam1:ImageMode", "Multiple")
    detector.put("cam1:NumImages", 200)
    detector.put("cam1:DataType", "UInt32")
    detector.put("cam1:AcquirePeriod", 0.002)
    detector.put("cam1:Acquire", 1)
    # A Multiple acquisition ends by itself, and Acquire goes back to Done.
    detector.wait_for(lambda: detector.value("cam1:NumImagesCounter_RBV") == 200
                      and detector.value("cam1:Acquire")["index"] == 0, "the acquisition's end")
    detector.wait_idle()

    def lines():
        return record.read_text().splitlines() if record.exists() else []
    wait_until(lambda: len(lines()) >= 200, 20, "200 frames at the consumer", consumer)
    frames = [json.loads(line) for line in lines()]
    assert [f["uniqueId"] for f in frames] == list(range(1, 201))
    assert {(f["nx"], f["ny"], f["dtype"]) for f in frames} == {(128, 128, "uint32")}
    assert frames[0]["shape"] == [128, 128]
    expected = physics.fermat_spiral_positions(400, 0.25e-6)
    got = np.array([(f["PosX"], f["PosY"]) for f in frames])
    np.testing.assert_allclose(got, expected[:200], atol=1e-12)


def test_single_image_mode_publishes_one_frame(detector):
    detector.put("cam1:ImageMode", "Single")
    before = detector.counter()
    detector.put("cam1:Acquire", 1)
    detector.wait_for(lambda: detector.counter() == before + 1
                      and detector.value("cam1:Acquire")["index"] == 0, "one frame, then Done")
    detector.wait_idle()
    assert detector.counter() == before + 1


@pytest.mark.parametrize("suffix", [".npz", ".cxi"])
def test_replay_of_a_recorded_scan(start_detector, tmp_path, suffix):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 60000, size=(5, 32, 48), dtype=np.uint16)
    positions = rng.uniform(-1e-6, 1e-6, size=(5, 2))
    path = tmp_path / f"scan{suffix}"
    save_scan(path, images, positions)
    detector = start_detector("--no-stage", "--replay", str(path))
    detector.put("cam1:AcquirePeriod", 0.01)
    detector.put("cam1:Acquire", 1)
    frames = monitor_frames(detector, 12)
    detector.put("cam1:Acquire", 0)
    for frame in frames:
        index = (frame["uniqueId"] - 1) % 5  # looped from the start
        assert frame["dimension"][0]["size"] == 48
        np.testing.assert_array_equal(frame["value"].reshape(32, 48), images[index])
        assert frame_position(frame) == pytest.approx(tuple(positions[index]))


def wait_for_position(detector: Detector, x: float, y: float, frames: int = 200):
    """Frames until one is at (x, y) m; the frames before it trail the stage by a few ms."""
    received: queue.Queue = queue.Queue()
    subscription = detector.ctx.monitor(detector.pv("Pva1:Image"), received.put)
    try:
        for _ in range(frames):
            frame = received.get(timeout=20.0)
            if frame["uniqueId"] == 0:  # the record's initial, empty value
                continue
            position = frame_position(frame)
            if position == pytest.approx((x, y), abs=1e-12):
                return position
    finally:
        subscription.close()
    raise AssertionError(f"no frame at ({x}, {y}) in {frames} frames")


def test_motor_moves_change_the_frame_positions(start_detector):
    detector = start_detector("--source", "Stage")
    pv = detector.pv
    detector.wait_for(lambda: epics.caget(pv("m1.RBV"), timeout=1) is not None, "stage IOC")
    assert epics.caput(pv("m1.VAL"), 2.0, wait=True, timeout=30)
    assert epics.caput(pv("m2.VAL"), -1.0, wait=True, timeout=30)
    detector.put("cam1:AcquirePeriod", 0.01)
    detector.put("cam1:Acquire", 1)
    wait_for_position(detector, 2e-6, -1e-6)
    assert epics.caput(pv("m1.VAL"), -3.0, wait=True, timeout=30)
    wait_for_position(detector, -3e-6, -1e-6)
    # Once there, the stage stays put and so do the frames.
    assert all(frame_position(f) == pytest.approx((-3e-6, -1e-6))
               for f in monitor_frames(detector, 5)[1:])
    detector.put("cam1:Acquire", 0)


@pytest.mark.parametrize("name, value", [
    ("cam1:AcquirePeriod", -1.0),
    ("cam1:AcquirePeriod", 0.0),
    ("cam1:SizeX", 100_000),
    ("cam1:SizeY", 0),
])
def test_out_of_range_put_is_refused_with_alarm(detector, name, value):
    pv = detector.pv
    before = epics.caget(pv(name))
    epics.caput(pv(name), value, wait=True, timeout=5)
    detector.wait_for(lambda: epics.caget(pv(name) + ".SEVR") == 1, f"alarm on {name}")
    assert epics.caget(pv(name)) == before
    assert epics.caget(pv(name + "_RBV")) == before
    message = epics.caget(pv("cam1:StatusMessage_RBV"), as_string=True)
    assert name.split(":")[1] in message and "refused" in message
    # Still alive, and the next good value is taken and clears the alarm.
    detector.put(name, before * 2)
    detector.wait_for(lambda: epics.caget(pv(name + "_RBV")) == before * 2, "a good put")
    assert epics.caget(pv(name) + ".SEVR") == 0


def test_string_into_a_number_is_refused(detector):
    with pytest.raises(Exception):  # noqa: B017 - the client or the server refuses it
        detector.put("cam1:AcquirePeriod", "fast")
    # Channel Access, as `caput` sends it: a DBR_STRING that the IOC fails to convert.
    reply = ca_write(detector.pv("cam1:AcquirePeriod"), "fast", data_type=ChannelType.STRING,
                     notify=True, timeout=5)
    assert reply.status.name == "ECA_PUTFAIL"
    assert epics.caget(detector.pv("cam1:AcquirePeriod")) == pytest.approx(0.001)
    assert detector.child.alive()
    detector.put("cam1:AcquirePeriod", 0.002)
    detector.wait_for(lambda: detector.value("cam1:AcquirePeriod_RBV") == pytest.approx(0.002),
                      "a good put after a bad one")


def test_unreadable_replay_file_is_an_error_not_a_crash(detector, tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a scan")
    detector.put("cam1:ReplayFile", str(bad))
    detector.put("cam1:ScanSource", "Replay")
    detector.put("cam1:Acquire", 1)
    detector.wait_for(lambda: detector.state() == "Error", "Error state")
    assert "broken.npz" in detector.value("cam1:StatusMessage_RBV")
    assert detector.value("cam1:Acquire")["index"] == 0
    detector.put("cam1:ScanSource", "Pattern")
    before = detector.counter()
    detector.put("cam1:Acquire", 1)
    detector.wait_counting(before + 5)
    detector.put("cam1:Acquire", 0)


@pytest.mark.parametrize("args", [
    ["sim", "--rate", "-5"],
    ["sim", "--size", "huge"],
    ["sim", "--size", "100000"],
    ["sim", "--replay", "/no/such/scan.cxi"],
    ["sim", "--no-such-option"],
    ["no-such-command"],
])
@pytest.mark.integration
def test_bad_command_line_is_one_line_error(args):
    import subprocess
    result = subprocess.run(ptychoedge(*args), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptychoedge")


def test_ctrl_c_stops_every_process(start_detector):
    detector = start_detector()
    children = _descendants(detector.child.pid)
    assert len(children) >= 3  # control IOC, image server, stage IOC
    assert detector.child.interrupt() == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]


def _descendants(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            children += [child, *_descendants(child)]
    return children


if sys.platform != "linux":  # /proc and prctl
    pytest.skip("Linux only", allow_module_level=True)


def test_longer_period_during_acquisition_applies_from_the_next_frame(detector):
    detector.put("cam1:AcquirePeriod", 0.001)
    detector.put("cam1:Acquire", 1)
    detector.wait_counting(1000)
    detector.put("cam1:AcquirePeriod", 2.0)
    detector.wait_for(lambda: detector.value("cam1:AcquirePeriod_RBV") == pytest.approx(2.0),
                      "AcquirePeriod_RBV")
    changed = detector.counter()
    # The next frame comes one new period after the last; not after the new period
    # applied to every frame already sent (over half an hour here).
    detector.wait_counting(changed + 1)
    detector.put("cam1:Acquire", 0)
    # Stop acts within one period.
    detector.wait_for(lambda: detector.state() == "Idle", "detector idle after Stop", 2.0)
