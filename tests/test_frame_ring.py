"""The frame ring keeps the streaming scan's frames and positions, and writes them as a scan."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import start_sim, wait_until

from ptychoedge.inference.instrument import read_cxi
from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
from ptychoedge.inference.scan_file import load_scan

pytestmark = pytest.mark.integration
KEPT = 30


class Ring:
    """`python -m ptychoedge.inference.frame_ring`, spoken to on its stdin."""

    def __init__(self, image_pv: str, log_path):
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ptychoedge.inference.frame_ring", "--image", image_pv,
             "--frames", str(KEPT), "--model", DEFAULT_MODEL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> int:
        self.process.stdin.close()  # its way to stop
        try:
            return self.process.wait(timeout=15)
        finally:
            self.process.kill()
            self.log.close()


@pytest.fixture
def ring(spawn, prefix, tmp_path):
    start_sim(spawn, prefix, tmp_path, "--no-stage", "--acquire", "--rate", "100")
    ring = Ring(prefix + "Pva1:Image", tmp_path / "ring.log")
    yield ring
    ring.stop()


def kept(ring: Ring) -> int:
    return int(ring.ask("count").split()[1])


def test_the_last_frames_are_kept_in_order_and_written_as_a_scan(ring, tmp_path):
    wait_until(lambda: kept(ring) == KEPT, 60, "the ring filled")
    path = tmp_path / "kept.cxi"
    said = ring.ask(f"write {path}").split()
    assert said[:3] == ["wrote", str(path), str(KEPT)]
    first, last = int(said[3]), int(said[4])
    assert last - first + 1 == KEPT  # the newest, none missing between
    assert ring.ask("count").split()[2] == "0"  # no frame missed so far
    frames, positions = load_scan(path)
    assert frames.shape[0] == KEPT and frames.sum() > 0
    assert np.isfinite(positions).all()
    assert len(np.unique(positions, axis=0)) == KEPT  # each frame at its own scan point
    written = read_cxi(path)
    model = load_manifest(DEFAULT_MODEL).instrument
    assert written.geometry == model.geometry
    assert written.probe.shape == model.probe.shape


def test_clear_starts_again_and_bad_commands_are_answered(ring, tmp_path):
    wait_until(lambda: kept(ring) > 0, 60, "a first frame")
    assert ring.ask("clear") == "cleared"
    assert kept(ring) < KEPT
    assert ring.ask("bogus").startswith("error unknown command")
    assert ring.ask(f"write {tmp_path / 'no' / 'such' / 'dir.cxi'}").startswith("error")
    assert ring.process.poll() is None  # still serving
    wait_until(lambda: kept(ring) == KEPT, 60, "the ring filled again")
    assert ring.stop() == 0
