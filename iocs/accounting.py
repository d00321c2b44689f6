"""Counting frames across children that restart, and telling refused and late frames from
lost ones."""

from __future__ import annotations

from dataclasses import dataclass, field

REFUSAL_PATIENCE = 300.0  # s a refused frame's gap may take to show (5 s per gap before it)
SILENCE_PATIENCE = 30.0  # s a gap waits for instances that do not answer before it is lost


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

    _waiting: list[_Refusal] = field(default_factory=list)

    def refused(self, now: float, input_id: int, frames: int) -> None:
        if frames > 0:
            self._waiting.append(_Refusal(now, input_id, frames))

    def lost(self, now: float, gaps: int, collected_to: int | None) -> int:
        """Of `gaps` new gaps at the collector, how many are not refused frames: late or lost."""
        explained = 0
        for refusal in self._waiting:
            taken = min(refusal.frames, gaps - explained)
            refusal.frames -= taken
            explained += taken
        self._waiting = [r for r in self._waiting if r.frames > 0
                         and now - r.when < REFUSAL_PATIENCE
                         and (collected_to is None or collected_to < r.input_id)]
        return gaps - explained

    def reset(self) -> None:
        self._waiting.clear()


@dataclass
class _Gap:
    when: float
    collected_to: int  # the collector's last id then: the gap's ids lie below it
    frames: int  # not yet explained by a late frame


@dataclass
class OverdueFrames:
    """Gaps the collector gave up waiting for: lost, or only late.

    An instance behind the others delivers its frames after the collector has passed
    their ids; they are placed then, and count as late. A gap is lost for good once no
    instance can still deliver a frame below the collector's id of its time: every
    instance's oldest frame not yet published lies above it (`floor`), or the gap is
    SILENCE_PATIENCE old (an instance that stopped answering may be gone for good).
    """

    lost: int = 0  # frames of settled gaps
    _gaps: list[_Gap] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(gap.frames for gap in self._gaps)

    def gave_up(self, now: float, frames: int, collected_to: int) -> None:
        if frames > 0:
            self._gaps.append(_Gap(now, collected_to, frames))

    def came_late(self, frames: int) -> None:
        """`frames` came after the collector gave up on them: they fill the oldest gaps."""
        for gap in self._gaps:
            taken = min(gap.frames, frames)
            gap.frames -= taken
            frames -= taken
        self.lost = max(0, self.lost - frames)  # a frame later than its gap's patience
        self._gaps = [gap for gap in self._gaps if gap.frames > 0]

    def settle(self, now: float, floor: float) -> None:
        """`floor`: the lowest id an instance may still deliver (inf when none can)."""
        waiting = []
        for gap in self._gaps:
            if gap.collected_to < floor or now - gap.when >= SILENCE_PATIENCE:
                self.lost += gap.frames
            else:
                waiting.append(gap)
        self._gaps = waiting

    def reset(self) -> None:
        self.lost = 0
        self._gaps.clear()
