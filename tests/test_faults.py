"""Reliability: faults against real processes, each test asserting the behaviour and
recording its figures (load held, faults survived, inputs tried, frames lost).

The figures are shown as a table in the run's summary (tests/conftest.py) and
written to `reliability.json` in pytest's base temporary directory.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import epics
import pytest
from bad_frames import FAULT_FRAMES
from conftest import RELIABILITY_FIGURES, pva_ready, start_ioc, start_sim, wait_until
from test_pipeline_ioc import STARTUP, Pipeline

from ptychoedge.apps.beamline import plain
from ptychoedge.inference.manifest import MODEL_DIR
from ptychoedge.iocs.instances import SERVER_QUEUE  # frames pvAccess may hold for an instance
from ptychoedge.pvdb import pipeline

BAD_FRAMES_SERVER = Path(__file__).with_name("bad_frames_server.py")
RATE = 150  # Hz: modest, so two shared cores hold it with time to spare
STALL = 2.0  # s an instance is stopped; its share meanwhile waits in pvAccess's queues


@pytest.fixture(scope="module")
def figures(request, tmp_path_factory):
    """Rows of figures, one or more per test; shown in the run's summary, and written."""
    rows = request.config.stash.setdefault(RELIABILITY_FIGURES, [])
    yield rows
    report = tmp_path_factory.getbasetemp() / "reliability.json"
    report.write_text(json.dumps(rows, indent=2) + "\n")


@pytest.fixture
def record(figures, request):
    def add(**row) -> None:
        figures.append({"scenario": request.node.name, **row})
    return add


@pytest.fixture
def line(spawn, pva, prefix, tmp_path) -> Pipeline:
    return Pipeline(spawn, pva, prefix, tmp_path, MODEL_DIR)


def child_pids(line: Pipeline, marker: str) -> list[int]:
    """The IOC's children whose command line holds `marker`."""
    found = []
    for pid in line.children():
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(pid)
        except OSError:
            pass
    return found


def instance_pid(line: Pipeline, index: int) -> int:
    for pid in line.children():
        args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        if "--consumer-id" in args and args[args.index("--consumer-id") + 1] == str(index):
            return pid
    raise AssertionError(f"no instance {index}")


def gone(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True


def collector_stats(line: Pipeline) -> dict:
    """The collector's statistics, once its status channel answers (it may be restarting)."""
    channel = pipeline.collector_channels(line.p)["status"]

    def read():
        try:
            return line.ctx.get(channel, timeout=2)["userStats"]
        except Exception:
            line.ctx.disconnect(channel)  # search afresh for a restarted collector
            return None
    return line.wait(read, "the collector's status")


def accounted(line: Pipeline, frames: int, what: str, timeout: float = 60) -> None:
    """Wait until every frame is either published or counted missed, and both are stable."""
    try:
        line.wait(lambda: line.get("FramesProcessed_RBV") + line.get("FramesMissed_RBV")
                  >= frames and line.get("Backlog_RBV") == 0, what, timeout)
    except AssertionError as error:
        counts = {n: line.get(n) for n in ("FramesProcessed_RBV", "FramesMissed_RBV",
                                           "Backlog_RBV", "FrameErrors_RBV")}
        raise AssertionError(f"{what} of {frames}: {counts}") from error


def two_instances_streaming(line: Pipeline, frames: int, processed: int) -> None:
    """Two instances running, an acquisition of `frames` under way, `processed` done."""
    line.put("InstancesPerNode", 2)
    line.put("Run", "Run")
    line.wait_running(2)
    line.acquire(frames, RATE)
    line.wait_processed(processed)


def test_an_instance_killed_mid_stream(line, record):
    frames = 600
    two_instances_streaming(line, frames, 100)
    victim = instance_pid(line, 1)
    held = int(line.instance_status(1)["userStats"]["queued"])
    batch = int(line.instance_status(1)["userStats"]["batchSize"])
    os.kill(victim, signal.SIGKILL)
    line.wait(lambda: line.get("Restarts_RBV") == 1, "the restart counted")
    line.wait_running(2)
    accounted(line, frames, "every frame published or counted missed")
    processed, missed = line.get("FramesProcessed_RBV"), line.get("FramesMissed_RBV")
    lost = frames - processed
    # What the killed instance could hold: its server-side queue, its own queue, a batch.
    bound = SERVER_QUEUE + held + batch
    assert processed > frames - bound and lost <= bound, (processed, lost, bound)
    assert missed == lost  # every lost frame is counted, none twice
    assert "died" in line.get("Message_RBV") or line.get("State_RBV") == "Running"
    # ... and the pipeline goes on with both instances
    line.acquire(300, RATE)
    line.wait_processed(processed + 300)
    assert line.get("FramesMissed_RBV") == missed
    record(load=f"{frames}+300 frames @ {RATE} Hz, 2 instances", faults=1, survived=1,
           inputs=frames + 300, frames_lost=lost,
           notes=f"killed instance held <= {bound}; FramesMissed {missed}")


def test_an_instance_stalled_mid_stream(line, record):
    """An instance that stops for a moment (a busy host, a long pause) delivers its frames
    late: the collector gives up waiting for them, yet they go into the mosaic when they
    come, and no frame is counted lost, not even for a while."""
    frames = 1200
    two_instances_streaming(line, frames, 100)
    seen = {"FramesMissed_RBV": [], "MissedRate_RBV": []}
    watches = [line.ctx.monitor(line.p + name, lambda value, name=name: seen[name].append(
        plain(value))) for name in seen]
    victim = instance_pid(line, 1)
    os.kill(victim, signal.SIGSTOP)
    try:
        # the other instance's outputs fill the collector's cache meanwhile
        time.sleep(STALL)
    finally:
        os.kill(victim, signal.SIGCONT)
    accounted(line, frames, "every frame published or counted missed")
    line.wait(lambda: collector_stats(line)["placed"] == frames, "every patch in the mosaic")
    late = int(line.ctx.get(pipeline.collector_channels(line.p)["status"],
                            timeout=5)["collectorStats"]["nRejected"])
    for watch in watches:
        watch.close()
    assert late > 0  # the collector did give up on the stalled instance's frames
    assert line.get("FramesProcessed_RBV") == frames
    assert max(seen["FramesMissed_RBV"]) == 0 and max(seen["MissedRate_RBV"]) == 0, seen
    assert line.get("Restarts_RBV") == 0
    record(load=f"{frames} frames @ {RATE} Hz, 2 instances", faults=1, survived=1,
           inputs=frames, frames_lost=frames - collector_stats(line)["placed"],
           notes=f"instance stopped (SIGSTOP) for {STALL:g} s; "
                 f"{late} outputs came after the collector gave up, all placed")


def test_the_collector_killed_mid_stream(line, record):
    frames = 600
    two_instances_streaming(line, frames, 150)
    (victim,) = child_pids(line, "pvapy-hpc-collector")
    placed_before = collector_stats(line)["placed"]
    os.kill(victim, signal.SIGKILL)
    line.wait(lambda: line.get("Restarts_RBV") == 1, "the restart counted")
    line.wait(lambda: child_pids(line, "pvapy-hpc-collector")
              and child_pids(line, "pvapy-hpc-collector")[0] != victim, "a new collector")
    line.wait_processed(frames)
    assert line.get("FramesProcessed_RBV") == frames  # the instances lost nothing
    # the mosaic continues with the next frames, once the new collector answers (it may
    # come up only after this acquisition's last frame): its image follows the latest
    collector_stats(line)
    line.acquire(300, RATE)
    line.wait_processed(frames + 300)
    line.wait(lambda: collector_stats(line)["placed"] > 0 and line.ctx.get(
        line.p + "Mosaic:Amplitude", timeout=5)["uniqueId"] >= frames + 280,
        "the mosaic at the latest frames")
    placed_after = collector_stats(line)["placed"]
    mosaic_lost = frames + 300 - placed_before - placed_after
    # lost: what the instances published while no collector ran, that is the rest of the
    # first acquisition, give or take a second (placed_before is read from a report up to
    # a second old, and the new collector finds the instances' channels as they publish)
    assert 0 < mosaic_lost < frames - placed_before + RATE, (mosaic_lost, placed_before)
    # counted as missed: the ids between the dead collector's last and the new one's first.
    # The dead one's last and placed_before each come from a report up to a second old, so
    # the two counts may differ by up to two seconds of frames (seen: 179 at 150 Hz)
    missed = line.get("FramesMissed_RBV")
    assert abs(missed - mosaic_lost) <= 2 * RATE, (missed, mosaic_lost)
    assert line.get("State_RBV") == "Running", line.get("Message_RBV")
    record(load=f"{frames}+300 frames @ {RATE} Hz, 2 instances", faults=1, survived=1,
           inputs=frames + 300, frames_lost=mosaic_lost,
           notes=f"frames missing from the mosaic while the collector restarted; "
                 f"FramesMissed {missed}, reconstructions lost 0")


def test_the_pipeline_ioc_killed_and_started_again(line, record):
    line.put("InstancesPerNode", 2)
    line.put("BatchSize", 4)
    line.put("TargetRate", 55.5)
    line.put("Run", "Run")
    line.wait_running(2)
    saved = line.state_dir / f"{line.p.rstrip(':')}.softsav"
    line.wait(lambda: saved.exists() and f"{line.p}BatchSize: 4" in saved.read_text()
              and f"{line.p}Run: 1" in saved.read_text(), "the knobs saved")
    frames = 600
    line.acquire(frames, RATE)
    line.wait_processed(100)
    children = line.children()
    assert len(children) == 5  # two instances, the collector, the image relay, the frame ring
    processed_before = line.get("FramesProcessed_RBV")
    os.kill(line.ioc.pid, signal.SIGKILL)
    for pid in children:
        wait_until(lambda pid=pid: gone(pid), 15, f"child {pid} gone with the IOC")
    line.start_ioc()
    assert line.get("InstancesPerNode") == 2 and line.get("BatchSize") == 4
    assert line.get("TargetRate") == 55.5
    line.wait_running(2)  # Run restored: instances started again
    line.wait(lambda: line.get("BatchSize_RBV") == 4, "the restored batch applied")
    line.acquire(300, RATE)
    line.wait_processed(300)
    accounted(line, 300, "the new run accounted")
    assert line.get("FramesMissed_RBV") == 0
    record(load=f"{frames}+300 frames @ {RATE} Hz, 2 instances", faults=1, survived=1,
           inputs=frames + 300, frames_lost=frames - processed_before,
           notes="frames of the first acquisition not published before the kill or while "
                 "no pipeline ran (counters start again with the new IOC); 0 of 300 after")


def test_the_detector_restarted(line, record, tmp_path):
    line.put("InstancesPerNode", 2)
    line.put("Run", "Run")
    line.wait_running(2)
    line.acquire(300, RATE)
    line.wait_processed(300)
    accounted(line, 300, "the first scan")
    assert line.get("FramesMissed_RBV") == 0
    # the detector's processes stop and start again: uniqueId from 1
    assert line.sim.interrupt() == 0
    line.sim = start_sim(line.spawn, line.d, tmp_path, "--no-stage")
    line.wait(lambda: line.get("State_RBV") == "Running", "the pipeline back on the input", 60)
    line.acquire(300, RATE)
    line.wait_processed(600)
    accounted(line, 600, "the second scan")
    assert line.get("FramesMissed_RBV") == 0  # not the old scan's 300 ids
    line.wait(lambda: collector_stats(line)["scans"] == 2
              and collector_stats(line)["patches"] == 300, "a new mosaic")
    # a counter reset right after the last frame: the collector still holds the old tail
    line.wait(lambda: plain(line.ctx.get(line.d + "cam1:Acquire_RBV", timeout=5)) == "Done",
              "the acquisition's end")
    line.ctx.put(line.d + "cam1:ArrayCounter", 0, timeout=5)
    line.acquire(300, RATE)
    line.wait_processed(900)
    accounted(line, 900, "the third scan")
    assert line.get("FramesMissed_RBV") == 0
    line.wait(lambda: collector_stats(line)["scans"] == 3
              and collector_stats(line)["placed"] == 900, "every patch placed, a third mosaic")
    line.wait(lambda: line.get("Backlog_RBV") == 0 and line.get("InputRate_RBV") == 0,
              "backlog and input rate back to 0")
    assert line.get("Restarts_RBV") == 0
    record(load=f"3 x 300 frames @ {RATE} Hz, 2 instances", faults=2, survived=2, inputs=900,
           frames_lost=900 - line.get("FramesProcessed_RBV"),
           notes="detector process restarted, then counter reset at once; mosaics 3, "
                 f"FramesMissed {line.get('FramesMissed_RBV')}")


@pytest.mark.timeout(240)  # pvapy's collector waits 5 s at each of the 13 gaps
def test_malformed_frames_through_the_pipeline(spawn, pva, prefix, tmp_path, record):
    channel, go = prefix + "bad:Image", tmp_path / "go"
    server = spawn(sys.executable, str(BAD_FRAMES_SERVER), channel, str(go), "faults",
                   name="bad-frames")
    wait_until(pva_ready(pva, channel), 60, "the bad frame server", server)
    p = prefix + "E:"
    ioc = start_ioc(spawn, pva, p, channel, tmp_path / "state", "--model-dir", str(MODEL_DIR))

    def get(name: str):
        return plain(pva.get(p + name, timeout=5))
    pva.put(p + "Run", "Run", timeout=5)
    wait_until(lambda: get("State_RBV") == "Running" and get("Instances_RBV") == 1, STARTUP,
               "the pipeline running", ioc)
    go.touch()
    bad = [kind for kind, error in FAULT_FRAMES.items() if error]
    good = len(FAULT_FRAMES) + 1 + len(FAULT_FRAMES) - len(bad)
    wait_until(lambda: get("FrameErrors_RBV") >= len(bad) and get("FramesProcessed_RBV") >= good,
               90, "every frame reconstructed or refused", ioc)
    status = pva.get(pipeline.instance_channels(p, 1)["status"], timeout=5)["userStats"]
    expected: dict[str, int] = {}
    for error in FAULT_FRAMES.values():
        if error:
            expected[error] = expected.get(error, 0) + 1
    assert {kind: status[f"errors_{kind}"] for kind in expected} == expected
    assert get("FrameErrors_RBV") == len(bad) and get("FramesProcessed_RBV") == good
    assert get("Restarts_RBV") == 0
    def collector() -> dict:
        return pva.get(pipeline.collector_channels(p)["status"], timeout=5)["userStats"]
    # every reconstruction placed but the one without a scan position, an error there
    # pvapy's collector waits 5 s at each gap the refused frames left: 13 gaps, 65 s
    wait_until(lambda: collector()["placed"] >= good - 1 and collector()["errors"] >= 1, 120,
               "the patches placed", ioc)
    assert (collector()["placed"], collector()["errors"]) == (good - 1, 1)
    # the refused frames are errors, not lost frames, though the collector saw gaps there
    gaps = pva.get(pipeline.collector_channels(p)["status"], timeout=5)["collectorStats"]
    assert gaps["nMissed"] - gaps["nRejected"] == len(bad)
    missed = get("FramesMissed_RBV")
    assert missed == 0
    record(load=f"{2 * len(FAULT_FRAMES) + 1} frames at 20 Hz, 1 instance", faults=len(bad),
           survived=len(bad), inputs=len(FAULT_FRAMES),
           frames_lost=0, notes=f"refused {expected}; legit kinds reconstructed: "
           f"{[k for k, e in FAULT_FRAMES.items() if not e]}; FramesMissed {missed} "
           "(refused frames are errors, not lost)")


# (knob, value) pairs each put must refuse, over CA and over PVA
def caput_in_a_child(puts: list[tuple[str, object]]) -> None:
    """Channel Access puts from a process of their own: after a put of NaN, pyepics was
    seen to deliver no more monitor updates to the process that made it (to any IOC)."""
    script = ("import epics, json, sys\n"
              "for pv, value in json.loads(sys.argv[1]):\n"  # a refusal raises nothing:
              "    if epics.caput(pv, value, wait=True, timeout=5) is None:\n"  # no answer does
              "        sys.exit(f'{pv}: no answer')\n")
    subprocess.run([sys.executable, "-c", script, json.dumps(puts)], check=True, timeout=120)


BAD_CA = [("BatchSize", 1000), ("BatchSize", 0), ("BatchSize", -5), ("TargetRate", math.inf),
          ("TargetRate", -math.inf), ("TargetRate", math.nan), ("TargetRate", -1.0),
          ("TargetRate", 1e12), ("InstancesPerNode", 65), ("MaxInstances", 0), ("Run", 5),
          # pyepics turns a numeric string into a number before it sends it, and refuses a
          # non-numeric one itself (ValueError): those are tried over PVA only
          ("Backend", 3), ("Precision", -1), ("BatchSize", "1000"), ("TargetRate", "-7.5"),
          ("InputChannel", ""), ("InputChannel", "X" * 300)]
BAD_PVA = [("BatchSize", 1000), ("TargetRate", math.inf), ("TargetRate", -math.inf),
           ("TargetRate", math.nan), ("TargetRate", -0.5), ("InstancesPerNode", -1),
           ("MaxInstances", 10**12), ("Run", "Maybe"), ("Backend", "cuda"), ("Run", 2),
           ("BatchSize", "many"), ("TargetRate", "fast"), ("BatchSize", [1, 2]),
           ("TargetRate", {"a": 1}), ("InputChannel", ""), ("InputChannel", "X" * 300),
           ("Model", "M" * 300)]


def test_bad_knob_values_are_refused(spawn, pva, prefix, tmp_path, record):
    p = prefix
    ioc = start_ioc(spawn, pva, p, prefix + "Pva1:Image", tmp_path / "state")

    def get(name: str):
        return plain(pva.get(p + name, timeout=5))
    before = {name: get(name) for name, _ in BAD_CA + BAD_PVA}
    refused = []
    caput_in_a_child([(p + name, value) for name, value in BAD_CA])
    assert "InputChannel: 256 characters refused" in get("Message_RBV")  # the last (CA cuts)
    for name, value in BAD_CA:
        what = f"{name} <- {str(value)[:20]!r} over ca"
        assert get(name) == before[name], what  # value kept
        refused.append(what)
    assert ioc.alive()
    for name, value in BAD_PVA:
        with pytest.raises(Exception):  # noqa: B017 - p4p raises the refusal as is
            pva.put(p + name, value, timeout=5)
        what = f"{name} <- {str(value)[:20]!r} over pva"
        assert get(name) == before[name], what  # value kept
        assert ioc.alive(), what
        refused.append(what)
    epics.caput(p + "TargetRate", math.inf, wait=True, timeout=5)
    wait_until(lambda: epics.caget(p + "TargetRate.SEVR") == 1, 10, "alarm on TargetRate", ioc)
    assert "TargetRate" in get("Message_RBV")
    epics.caput(p + "BatchSize", -5, wait=True, timeout=5)
    wait_until(lambda: "BatchSize" in get("Message_RBV") and "minimum" in get("Message_RBV"),
               10, "the reason in Message_RBV", ioc)
    assert epics.caget(p + "BatchSize.SEVR") == 1
    pva.put(p + "InputChannel", "OK:Image", timeout=5)  # a good put goes through
    wait_until(lambda: get("InputChannel_RBV") == "OK:Image", 10, "a good put applied", ioc)
    record(load="idle IOC", faults=len(refused), survived=len(refused), inputs=len(refused),
           frames_lost=0, notes="refused, value kept, MINOR alarm and the reason in Message")
