"""Who may change the pipeline (EPICS access security), and which models it will load."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import epics
import pytest
from conftest import ptychoedge, start_ioc, start_sim, wait_until

from ptychoedge import iocs as iocs_package
from ptychoedge.apps.beamline import plain
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    copy_model,
    load_model,
    save_model,
)
from ptychoedge.pvdb import pipeline
from ptychoedge.sim import physics

# not ptychoedge.iocs.access: it loads softioc, which has no business in the test process
EXAMPLE_ACF = Path(iocs_package.__file__).with_name("ptychoedge.acf")
STARTUP = 90  # s: instances load torch and onnxruntime, on two shared cores
SIOCGIFADDR = 0x8915


def local_addresses() -> set[str]:
    """Every IPv4 address of this machine: a client here connects from one of them."""
    found = {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR,
                                    struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            found.add(socket.inet_ntoa(reply[20:24]))
    return found


def write_acf(path: Path, writers: list[str]) -> Path:
    path.write_text(
        "HAG(WRITERS) { " + ", ".join(writers) + " }\n"
        "ASG(DEFAULT) { RULE(1, READ) }\n"
        "ASG(KNOBS) {\n  RULE(1, READ)\n  RULE(1, WRITE, TRAPWRITE) { HAG(WRITERS) }\n}\n")
    return path


def caput(pv: str, value) -> bool:
    """Whether a Channel Access put went through (pyepics raises when access is denied)."""
    try:
        return bool(epics.caput(pv, value, wait=True, timeout=5))
    except (epics.ca.ChannelAccessException, epics.ca.CASeverityException):
        return False


def get(pva, name: str):
    return plain(pva.get(name, timeout=5))


def test_knobs_refuse_writes_from_hosts_the_acf_does_not_list(spawn, pva, prefix, tmp_path):
    acf = write_acf(tmp_path / "others.acf", ["nothere.invalid"])
    ioc = start_ioc(spawn, pva, prefix, prefix + "Pva1:Image", tmp_path / "state", "--acf",
                    str(acf))
    wait_until(lambda: "access security from" in ioc.log(), 10, "the ACF loaded", ioc)
    # reading stays open to anyone, over both protocols
    assert epics.caget(prefix + "State_RBV", as_string=True, timeout=5) == "Idle"
    assert epics.caget(prefix + "BatchSize", timeout=5) == 8
    assert epics.PV(prefix + "BatchSize").wait_for_connection(5)
    assert not epics.PV(prefix + "BatchSize").write_access
    assert not caput(prefix + "BatchSize", 16)
    assert not caput(prefix + "ResetStats", 1)
    assert not caput(prefix + "Model", "other")
    with pytest.raises(Exception, match="not permitted"):
        pva.put(prefix + "BatchSize", 4, timeout=5)
    with pytest.raises(Exception, match="not permitted"):
        pva.put(prefix + "Run", 1, timeout=5)
    assert epics.caget(prefix + "BatchSize", timeout=5) == 8 == get(pva, prefix + "BatchSize")
    assert get(pva, prefix + "BatchSize_RBV") == 8
    assert get(pva, prefix + "Model_RBV") == DEFAULT_MODEL
    assert get(pva, prefix + "Run_RBV") == "Stop"


def test_knobs_take_writes_from_hosts_the_acf_lists(spawn, pva, prefix, tmp_path):
    writers = [socket.gethostname(), *sorted(local_addresses())]
    acf = write_acf(tmp_path / "here.acf", writers)
    ioc = start_ioc(spawn, pva, prefix, prefix + "Pva1:Image", tmp_path / "state", "--acf",
                    str(acf))
    assert caput(prefix + "BatchSize", 16)
    wait_until(lambda: get(pva, prefix + "BatchSize_RBV") == 16, 30, "caput applied", ioc)
    pva.put(prefix + "BatchSize", 4, timeout=5)
    wait_until(lambda: get(pva, prefix + "BatchSize_RBV") == 4, 30, "pvput applied", ioc)
    # every allowed write is logged with who made it (TRAPWRITE)
    wait_until(lambda: f"{prefix}BatchSize.VAL 16 -> 4" in ioc.log(), 10, "the put logged", ioc)


def test_the_example_acf_loads(spawn, pva, prefix, tmp_path):
    ioc = start_ioc(spawn, pva, prefix, prefix + "Pva1:Image", tmp_path / "state", "--acf",
                    str(EXAMPLE_ACF))
    wait_until(lambda: "access security from" in ioc.log(), 10, "the ACF loaded", ioc)


@pytest.mark.integration
@pytest.mark.parametrize("content", [None, "ASG(DEFAULT) { RULE(1, READ)\n"])
def test_a_missing_or_broken_acf_stops_the_ioc_with_a_clear_error(tmp_path, prefix, content):
    acf = tmp_path / "access.acf"
    if content is not None:
        acf.write_text(content)
    done = subprocess.run(
        ptychoedge("ioc", "--prefix", prefix, "--state-dir", str(tmp_path / "state"),
                   "--acf", str(acf)), capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    assert "ptychoedge ioc: error: " in done.stderr and str(acf) in done.stderr
    if content is not None:
        assert "syntax error" in output


# -- model changes ---------------------------------------------------------------------

@pytest.fixture
def bad_models(tmp_path) -> tuple[Path, list[tuple[str, str]]]:
    """A model directory with the shipped model and bad ones beside it, and valid models
    outside it; the names to put, each with what the refusal must say."""
    models, outside = tmp_path / "models", tmp_path
    copy_model(DEFAULT_MODEL, MODEL_DIR, models, DEFAULT_MODEL)
    copy_model(DEFAULT_MODEL, MODEL_DIR, outside, "x")  # ../x: valid, but not in the directory
    copy_model(DEFAULT_MODEL, MODEL_DIR, models / "sub", "x")

    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "tampered")
    weights = bytearray((models / "tampered.pt").read_bytes())
    weights[-100] ^= 0xFF
    (models / "tampered.pt").write_bytes(bytes(weights))

    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "graph-tampered")  # what ONNX Runtime would run
    graph = bytearray((models / "graph-tampered.onnx").read_bytes())
    graph[-100] ^= 0xFF
    (models / "graph-tampered.onnx").write_bytes(bytes(graph))

    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "truncated")
    text = (models / "truncated.json").read_text()
    (models / "truncated.json").write_text(text[:len(text) // 2])

    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "garbage")
    (models / "garbage.json").write_bytes(bytes(range(256)) * 4)

    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "linked")
    (models / "linked.pt").unlink()
    (models / "linked.pt").symlink_to(outside / "x.pt")

    # a valid model of an instrument with 256x256 frames: the detector's are 128x128
    model, shipped = load_model(DEFAULT_MODEL)
    save_model(model, Manifest.for_instrument(
        "big-crop", shipped.shape, replace(shipped.preprocessing, crop_size=256),
        physics.default_instrument(256)), models)
    # a network of 32 px behind a preprocessing that makes 64 px
    data = json.loads((MODEL_DIR / f"{DEFAULT_MODEL}.json").read_text())
    data["shape"]["input_size"] = 32
    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "mismatched")
    (models / "mismatched.json").write_text(json.dumps(data))

    cases = [
        ("../x", "must be a plain name"),
        (str(outside / "x"), "must be a plain name"),
        ("sub/x", "must be a plain name"),
        ("tampered", "does not match the sha256"),
        ("graph-tampered", "graph-tampered.onnx does not match the sha256"),
        ("truncated", "truncated.json: not a valid model bundle"),
        ("garbage", "garbage.json: not a valid model bundle"),
        ("linked", "linked.pt leads outside the model directory"),
        ("big-crop", "does not fit the 128x128 frames"),
        ("mismatched", "the network takes 32 px"),
    ]
    return models, cases


@pytest.mark.timeout(400)
def test_bad_models_are_refused_while_frames_keep_flowing(spawn, pva, prefix, tmp_path,
                                                           bad_models):
    models, cases = bad_models
    d, p = prefix, prefix.replace(":", "E:")
    sim = start_sim(spawn, d, tmp_path, "--no-stage")
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state",
                    "--model-dir", str(models))

    def wait(condition, what, timeout=30):
        return wait_until(condition, timeout, what, ioc)

    pva.put(p + "Run", "Run", timeout=5)
    wait(lambda: get(pva, p + "State_RBV") == "Running", "the pipeline running", STARTUP)
    for name, value in (("cam1:ImageMode", "Continuous"), ("cam1:AcquirePeriod", 1 / 40),
                        ("cam1:Acquire", 1)):
        pva.put(d + name, value, timeout=5)
    wait(lambda: get(pva, p + "FramesProcessed_RBV") >= 40, "frames reconstructed")

    status = pipeline.instance_channels(p, 1)["status"]
    for name, reason in cases:
        before = get(pva, p + "FramesProcessed_RBV")
        if name in ("../x", "tampered"):  # short names: a CA string holds 40 characters
            assert caput(p + "Model", name), name
        else:
            pva.put(p + "Model", name, timeout=5)
        message = wait(lambda r=reason: r in get(pva, p + "Message_RBV")
                       and get(pva, p + "Message_RBV"), f"{name!r} refused: {reason}")
        assert message.startswith("refused:"), message
        assert get(pva, p + "Model_RBV") == DEFAULT_MODEL, name
        assert pva.get(status, timeout=5)["userStats"]["model"] == DEFAULT_MODEL, name
        wait(lambda b=before: get(pva, p + "FramesProcessed_RBV") >= b + 40,
             f"frames still reconstructed after {name!r}")

    # a refused model, once mended, is taken at the next put of the same name
    copy_model(DEFAULT_MODEL, MODEL_DIR, models, "mismatched")
    pva.put(p + "Model", "mismatched", timeout=5)
    wait(lambda: get(pva, p + "Model_RBV") == "mismatched", "the mended model taken")

    pva.put(d + "cam1:Acquire", 0, timeout=5)
    wait(lambda: get(pva, d + "cam1:Acquire_RBV") == "Done", "the acquisition stopped")
    taken = get(pva, d + "cam1:ArrayCounter_RBV")
    wait(lambda: get(pva, p + "FramesProcessed_RBV") == taken, f"all {taken} frames published",
         60)
    assert get(pva, p + "FramesMissed_RBV") == 0
    assert get(pva, p + "FrameErrors_RBV") == 0
    assert sim.alive()
