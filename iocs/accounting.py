"""Counting frames across children that restart, and telling refused frames from lost ones."""

from __future__ import annotations

from dataclasses import dataclass, field

REFUSAL_PATIENCE = 300.0  # s a refused frame's gap may take to show (5 s per gap before it)


class Counter:
    """A running total of a child's counter, across the child's restarts."""

    def __init__(self) -> None:
        self.total = 0
        self._last: dict[str, int] = {}

    def add(self, source: str, value: int) -> int:
        """Take `source`'s counter reading; what it added since the last one."""
        last = self._last.get(source, 0)
        delta = value - last if value >= last else value  # a restarted child counts from 0
        self._last[source] = value
        self.total += delta
        return delta

    def reset(self) -> None:
        self.total = 0


@dataclass
class _Refusal:
    when: float
    input_id: int  # the detector's id at the time
    frames: int  # refused, not yet matched to a gap


@dataclass
class RefusedFrames:
    """Frames the instances refused as malformed: errors, not lost frames.

    Each leaves a gap in the ids that the collector counts as missed, later (it
    waits 5 s at each gap), so a refusal waits here for its gap. One still
    waiting once the collector has passed the input id of its time, or after
    REFUSAL_PATIENCE, never will show (a frame without an id, a scan's last frame).
    """

    gaps: int = 0  # gaps the collector counted that were refused frames
    _waiting: list[_Refusal] = field(default_factory=list)

    def refused(self, now: float, input_id: int, frames: int) -> None:
        if frames > 0:
            self._waiting.append(_Refusal(now, input_id, frames))

    def lost(self, now: float, gaps: int, collected_to: int | None) -> int:
        """Of `gaps` new gaps at the collector, how many are frames truly lost."""
        explained = 0
        for refusal in self._waiting:
            taken = min(refusal.frames, gaps - explained)
            refusal.frames -= taken
            explained += taken
        self.gaps += explained
        self._waiting = [r for r in self._waiting if r.frames > 0
                         and now - r.when < REFUSAL_PATIENCE
                         and (collected_to is None or collected_to < r.input_id)]
        return gaps - explained

    def reset(self) -> None:
        self.gaps = 0
        self._waiting.clear()
