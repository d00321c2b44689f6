"""Waiting for processes under benchmark, shared by the benchmark scripts."""

import time


def wait(condition, timeout: float, what: str):
    """Poll `condition` (errors count as not yet) until truthy; exit with a message if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise SystemExit(f"benchmark: timed out waiting for {what}")
