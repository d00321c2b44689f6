"""The supervisor's side of the frame ring (inference/frame_ring.py): what it keeps, and
its writes of the kept frames as a scan, one at a time for whichever part asks."""

from __future__ import annotations

import logging
from pathlib import Path

from p4p.client.thread import Context

from ptychoedge.iocs.news import News

log = logging.getLogger(__name__)

RING_TIMEOUT = 30.0  # s for the ring to write its frames


class RingClient:
    def __init__(self, ctx: Context, channel: str):
        self._ctx = ctx
        self.channel = channel
        self._owner: object | None = None  # the part whose write is in progress
        self._request = 0  # that write's request number
        self._asked_at = 0.0

    @property
    def busy(self) -> bool:
        """A write is in progress (asked by one part: the others wait)."""
        return self._owner is not None

    def writing_for(self, owner: object) -> bool:
        """The write in progress is `owner`'s."""
        return self._owner is owner

    def read(self) -> dict | None:
        """The ring's record (kept, missed, answered, error, written, ...), or None while it
        does not answer (not serving yet: the supervisor keeps it)."""
        try:
            return self._ctx.get(self.channel, timeout=1.0).todict()
        except (TimeoutError, RuntimeError):
            return None

    def write(self, owner: object, ring: dict, path: Path, model: str, instrument: str,
              now: float) -> None:
        """Ask the ring (its record `ring`, just read), for `owner`, to write its frames to
        `path` with the instrument in the CXI file `instrument`, or where that is ""
        `model`'s."""
        self._owner = owner
        self._request = ring["answered"] + 1
        self._asked_at = now
        self._ctx.put(self.channel, {"command": "write", "path": str(path), "model": model,
                                     "instrument": instrument, "request": self._request},
                      timeout=5)

    def outcome(self, now: float) -> tuple[str, int] | None:
        """How the write in progress went: None while it is not done, else (why it failed,
        or "", the frames written)."""
        ring = self.read()
        if ring is not None and ring["answered"] == self._request:
            self._owner = None
            return (f"the frame ring could not write its frames: {ring['error']}"
                    if ring["error"] else "", int(ring["written"]))
        if now - self._asked_at > RING_TIMEOUT:
            self._owner = None
            return f"the frame ring did not answer in {RING_TIMEOUT:.0f} s", 0
        return None

    def cancel(self, owner: object) -> None:
        """Forget `owner`'s write in progress, if any (the ring stopped with the pipeline)."""
        if self._owner is owner:
            self._owner = None


class RingPart:
    """A part of the supervisor that has the ring write its frames as a scan in the part's
    own folder and works on it (adaptation, refinement); its `status` has a `state`."""

    def __init__(self, ring: RingClient, work_dir: Path, news: News):
        self.ring = ring
        self.work_dir = work_dir
        self.news = news

    @property
    def _scan(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / "scan.cxi"

    def _fail(self, why: str) -> None:
        self.status.state = "Failed"
        self.ring.cancel(self)
        self.news.say(why)
        log.warning(why)
