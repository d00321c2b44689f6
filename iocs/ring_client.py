"""The supervisor's side of the frame ring (inference/frame_ring.py): what it keeps, and
its writes of the kept frames as a scan, one at a time for whichever part asks."""

from __future__ import annotations

from pathlib import Path

from p4p.client.thread import Context

RING_TIMEOUT = 30.0  # s for the ring to write its frames


class RingClient:
    def __init__(self, ctx: Context, channel: str):
        self._ctx = ctx
        self.channel = channel
        self._request = 0  # the request number of the write in progress, 0 when none
        self._asked_at = 0.0

    @property
    def busy(self) -> bool:
        """A write is in progress (asked by one part: the others wait)."""
        return self._request != 0

    def read(self) -> dict | None:
        """The ring's record (kept, missed, answered, error, written, ...), or None while it
        does not answer (not serving yet: the supervisor keeps it)."""
        try:
            return self._ctx.get(self.channel, timeout=1.0).todict()
        except (TimeoutError, RuntimeError):
            return None

    def write(self, ring: dict, path: Path, model: str, instrument: str, now: float) -> None:
        """Ask the ring (its record `ring`, just read) to write its frames to `path` with the
        instrument in the CXI file `instrument`, or where that is "" `model`'s."""
        self._request = ring["answered"] + 1
        self._asked_at = now
        self._ctx.put(self.channel, {"command": "write", "path": str(path), "model": model,
                                     "instrument": instrument, "request": self._request},
                      timeout=5)

    def outcome(self, ring: dict | None, now: float) -> tuple[str, int] | None:
        """How the write went, from the ring's record: None while it is not done, else
        (the reason it failed or "", the frames written)."""
        if ring is not None and ring["answered"] == self._request:
            self._request = 0
            return ring["error"], int(ring["written"])
        if now - self._asked_at > RING_TIMEOUT:
            self._request = 0
            return f"no answer in {RING_TIMEOUT:.0f} s", 0
        return None

    def cancel(self) -> None:
        """Forget the write in progress (the ring stopped with the pipeline)."""
        self._request = 0
