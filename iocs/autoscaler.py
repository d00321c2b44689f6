"""How many inference instances the pipeline needs: the automatic-scaling policy.

Once a second the supervisor hands `Autoscaler.decide` what it measured, and
gets back the instance count to run and a sentence saying why. The policy:

- Up, at once, when frames were lost, or when the backlog (frames the detector
  took that no instance has published yet) rose by more than a moment's input
  over the last few periods while fewer frames came out than went in: by as
  many instances as the shortfall needs, at least one. The rise is read over the
  whole window, not period by period: a status report that comes a period late
  makes one period look flat, and must not hide a pipeline falling behind.
- Down, by one, after the pipeline has kept up for `calm` seconds and the
  instances' busy time says one fewer would still run below `headroom` of its
  capacity. A count that lost frames at some input rate is not tried again
  until the rate falls `hysteresis` below that rate: it cannot oscillate.
  The step waits for a pause in the stream: an instance that leaves the pvapy
  distributor mid-stream loses the frames it was dealt until its connection
  closes, so scaling down mid-stream would lose frames.
- While no frames flow, at least enough instances for the target rate,
  estimated from the inference time per frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    """What the supervisor measured over the last period."""

    input_rate: float  # Hz, frames the detector produced
    processed_rate: float  # Hz, reconstructions published
    overdue: int  # frames the collector gave up waiting for in this period: late or lost
    backlog: int  # frames produced but not yet published, now
    instances: int  # running and ready
    busy: float  # sum over instances of rate x time per frame: instances' worth of work
    frame_time: float  # s of one instance's work per frame (0 when unknown)


@dataclass(frozen=True)
class Decision:
    instances: int
    reason: str


@dataclass
class Autoscaler:
    max_instances: int = 8
    target_rate: float = 0.0
    headroom: float = 0.75  # the busy fraction an instance may run at after scaling down
    calm: float = 8.0  # s of keeping up before scaling down
    hysteresis: float = 0.1  # relative rate drop before a count that lost frames is retried
    backlog_growth: int = 5  # periods over which a rising backlog means "falling behind"
    backlog_seconds: float = 0.5  # a backlog (or a rise) under this much input is in flight
    slack: float = 0.05  # processed below input by more than this: falling behind
    _calm_since: float | None = None
    _recent: deque[Observation] = field(default_factory=deque)  # the last periods, streaming
    _lost_at: dict[int, float] = field(default_factory=dict)  # count -> input rate it lost at
    _enough: int | None = None  # fewer instances that would have kept up, for the next pause

    def reset(self) -> None:
        self._calm_since = None
        self._recent.clear()
        self._lost_at.clear()
        self._enough = None

    def _bounded(self, count: int) -> int:
        return max(1, min(self.max_instances, count))

    def _needed_for(self, rate: float, frame_time: float) -> int:
        return math.ceil(rate * frame_time / self.headroom) if frame_time > 0 else 1

    def decide(self, now: float, seen: Observation) -> Decision:
        n = seen.instances
        if seen.input_rate <= 0:
            return self._idle(n, seen)

        behind = self._falling_behind(seen)
        if seen.overdue > 0 or behind:
            self._lost_at[n] = max(self._lost_at.get(n, 0.0), seen.input_rate)
            self._enough = None
            self._calm_since = None
            self._recent.clear()
            per_instance = seen.processed_rate / n if n and seen.processed_rate > 0 else 0.0
            shortfall = (math.ceil(seen.input_rate / per_instance) - n) if per_instance else 1
            wanted = self._bounded(n + max(1, shortfall))
            why = (f"{seen.overdue} frames late or lost" if seen.overdue
                   else "backlog growing")
            if wanted == n:
                return Decision(n, f"{why} at {seen.input_rate:.0f} Hz, but already at the "
                                   f"maximum of {self.max_instances} instances")
            return Decision(wanted, f"{why} at {seen.input_rate:.0f} Hz with {n}: "
                                    f"scaling up to {wanted}")

        if self._calm_since is None:
            self._calm_since = now
        fewer = n - 1
        if n <= 1 or now - self._calm_since < self.calm:
            return Decision(n, f"keeping up at {seen.input_rate:.0f} Hz with {n}")
        lost_rate = self._lost_at.get(fewer)
        if lost_rate is not None and seen.input_rate > lost_rate * (1 - self.hysteresis):
            return Decision(n, f"keeping up at {seen.input_rate:.0f} Hz with {n}; {fewer} lost "
                               f"frames at {lost_rate:.0f} Hz")
        if seen.busy > fewer * self.headroom:
            return Decision(n, f"keeping up at {seen.input_rate:.0f} Hz with {n}, "
                               f"{seen.busy:.2f} instances busy")
        self._enough = fewer if self._enough is None else min(self._enough, fewer)
        return Decision(n, f"{seen.input_rate:.0f} Hz keeps only {seen.busy:.2f} instances busy: "
                           f"{self._enough} would do, from the next pause in the stream")

    def _falling_behind(self, seen: Observation) -> bool:
        """Over the last `backlog_growth` periods the backlog rose by more than a moment's
        input and is more than a moment's input now, while fewer frames came out than went
        in (a busy machine also delays the status reports, which alone raises the backlog)."""
        self._recent.append(seen)
        if len(self._recent) > self.backlog_growth:
            self._recent.popleft()
        if len(self._recent) < self.backlog_growth:
            return False
        moment = seen.input_rate * self.backlog_seconds
        rose = seen.backlog - self._recent[0].backlog > moment
        slower = (sum(o.processed_rate for o in self._recent)
                  < (1 - self.slack) * sum(o.input_rate for o in self._recent))
        return rose and seen.backlog > moment and slower

    def _idle(self, n: int, seen: Observation) -> Decision:
        self._calm_since = None
        self._recent.clear()
        wanted, reason = n, "no frames flowing"
        if self._enough is not None and self._enough < n:
            wanted, reason = self._enough, f"stream paused: scaling down to {self._enough}"
        self._enough = None
        for_target = self._bounded(self._needed_for(self.target_rate, seen.frame_time))
        if self.target_rate > 0 and for_target > wanted:
            wanted, reason = for_target, (f"no frames flowing: {for_target} for the target "
                                          f"rate {self.target_rate:g} Hz")
        return Decision(wanted, reason)
