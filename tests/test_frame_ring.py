"""The frame ring keeps the streaming scan's frames and positions, and writes them as a scan."""

import sys

import pytest
from conftest import pva_ready, start_sim, wait_until

from ptychoedge.inference.instrument import read_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
from ptychoedge.inference.scan_file import load_scan
from ptychoedge.pvdb.pipeline import ring_channel

pytestmark = pytest.mark.integration
KEPT = 30


class Ring:
    """Requests to the ring's record, as the supervisor makes them."""

    def __init__(self, ctx, channel: str):
        self.ctx, self.channel, self.request = ctx, channel, 0

    def state(self) -> dict:
        return self.ctx.get(self.channel, timeout=2).todict()

    def ask(self, command: str, path: str = "") -> dict:
        self.request += 1
        self.ctx.put(self.channel, {"command": command, "path": path, "model": DEFAULT_MODEL,
                                    "instrument": "", "request": self.request}, timeout=10)
        return wait_until(lambda: (lambda s: s if s["answered"] == self.request else None)(
            self.state()), 10, f"the answer to {command}")


@pytest.fixture
def ring(spawn, prefix, tmp_path, pva):
    start_sim(spawn, prefix, tmp_path, "--no-stage", "--acquire", "--rate", "100")
    channel = ring_channel(prefix)
    child = spawn(sys.executable, "-m", "ptychoedge.inference.frame_ring", "--image",
                  prefix + "Pva1:Image", "--channel", channel, "--frames", str(KEPT),
                  name="ring")
    wait_until(pva_ready(pva, channel), 30, "the ring's record", child)
    ring = Ring(pva, channel)
    ring.child, ring.detector = child, prefix
    return ring


def test_the_last_frames_are_kept_in_order_and_written_as_a_scan(ring, tmp_path):
    wait_until(lambda: ring.state()["kept"] == KEPT, 60, "the ring filled")
    path = tmp_path / "kept.cxi"
    said = ring.ask("write", str(path))
    assert said["error"] == "" and said["written"] == KEPT
    assert said["last"] - said["first"] + 1 == KEPT  # the newest, none missing between
    assert said["missed"] == 0
    frames, positions = load_scan(path)
    assert frames.shape[0] == KEPT and frames.sum() > 0
    assert len({tuple(p) for p in positions}) == KEPT  # each frame at its own scan point
    written = read_cxi(path)
    model = load_manifest(DEFAULT_MODEL).instrument
    assert written.geometry == model.geometry
    assert written.probe.shape == model.probe.shape


def test_clear_starts_again_and_bad_requests_are_answered(ring, tmp_path):
    wait_until(lambda: ring.state()["kept"] > 0, 60, "a first frame")
    assert ring.ask("clear")["error"] == ""
    assert ring.ask("bogus")["error"].startswith("unknown command")
    assert ring.ask("write", str(tmp_path / "no" / "such" / "dir.cxi"))["error"]
    assert ring.child.alive()
    wait_until(lambda: ring.state()["kept"] == KEPT, 60, "the ring filled again")


def test_a_detector_restart_starts_a_new_scan(ring, pva, tmp_path):
    wait_until(lambda: ring.state()["kept"] == KEPT, 60, "the ring filled")
    before = ring.ask("write", str(tmp_path / "before.cxi"))
    pva.put(ring.detector + "cam1:ArrayCounter", 0, timeout=5)  # uniqueId back to 1
    wait_until(lambda: pva.get(ring.detector + "cam1:ArrayCounter_RBV", timeout=5)["value"] > 5, 10,
               "the new scan's first frames")
    after = ring.ask("write", str(tmp_path / "after.cxi"))
    assert after["last"] < before["first"]  # the new scan's frames...
    assert after["last"] - after["first"] + 1 == after["written"]  # ...and none of the last
