"""Child processes: their logs stay bounded while they run."""

from __future__ import annotations

import sys

import pytest
from conftest import wait_until

from ptychoedge.iocs.processes import Child, stop_all

pytestmark = pytest.mark.integration  # every test here starts processes

WRITER = """
import sys, time
while True:
    sys.stdout.write("x" * 99 + "\\n")
    sys.stdout.flush()
    time.sleep(0.001)
"""


def test_a_childs_log_starts_again_past_its_limit(tmp_path):
    path = tmp_path / "child.log"
    child = Child("writer", [sys.executable, "-c", WRITER], path)
    try:
        wait_until(lambda: path.stat().st_size > 20_000, 20, "the log growing")
        child.bound_log(limit=10_000)
        assert path.with_name("child.log.1").stat().st_size > 20_000
        wait_until(lambda: path.stat().st_size > 0, 20, "the child writing on")
        # it appends at the file's new start: no gap of zero bytes before its lines
        assert path.read_bytes()[:1] in (b"x", b"\n")
        child.bound_log(limit=10_000_000)  # under the limit: left alone
        assert path.exists() and path.stat().st_size > 0
    finally:
        stop_all([child], 5.0)
