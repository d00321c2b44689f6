"""Waiting for processes under benchmark and reading their PVs, shared by the benchmarks."""

import time

from ptychoedge.apps.beamline import plain


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


def read(ctx, name: str):
    """The plain value of `name` (p4p), or None if it does not answer (searched afresh)."""
    try:
        return plain(ctx.get(name, timeout=2))
    except TimeoutError:
        ctx.disconnect(name)
        return None
