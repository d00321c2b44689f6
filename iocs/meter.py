"""Measuring the pipeline once a period: rates, counts, backlog, latency, what was lost.

Frames are counted as docs/design.md asks: a frame is delivered only when its
reconstruction was published. Lost frames are the gaps in the `uniqueId`
sequence that reaches the collector, once no instance can still deliver them
(accounting.py: a frame that comes late is placed, not lost); the backlog is
what the detector produced that no instance has taken or finished.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ptychoedge.iocs.accounting import Counter, OverdueFrames, RefusedFrames
from ptychoedge.iocs.autoscaler import Observation
from ptychoedge.iocs.instances import Instance, Report
from ptychoedge.pvdb.processors import CollectorStatus, InstanceStatus

STATUS_TIMEOUT = 0.5  # s for a child's status channel, or the input, to answer
PAUSE_INTERVALS = 3  # frame intervals of silence that make a pause in the input...
PAUSE_MIN = 2.0  # s ...and never fewer seconds than this


@dataclass
class Figures:
    """What the pipeline did, as the status PVs show it."""

    input_rate: float = 0.0  # Hz
    processed_rate: float = 0.0  # Hz
    frames_processed: int = 0
    frames_missed: int = 0
    missed_rate: float = 0.0  # Hz
    backlog: int = 0
    frame_errors: int = 0
    latency_p50: float = 0.0  # ms
    latency_p99: float = 0.0  # ms
    inference_time: float = 0.0  # ms per frame
    residual: float = 0.0
    # how much the instances' latest frames differ from one another beyond their counting
    # noise, over it, and the share of that their answers explain (0, 0: too few frames yet)
    frames_over_noise: float = 0.0
    explained: float = 0.0
    # the most pixels per frame that are no counts (the pixel type's maximum, or below 0),
    # outside the model's mask
    pixels_not_counts: float = 0.0
    # how well the collector's latest patches agree with the mosaic before them, and how
    # many of them met it (0, 0: none yet)
    agreement: float = 0.0
    overlaps: int = 0
    instances: int = 0  # reporting
    instance_rates: list[float] = field(default_factory=list)


class InputRate:
    """The input's frame rate, from its latest `uniqueId` once a period.

    A slow detector's frames do not fall in every period: a period without a new frame
    keeps the rate until the input has been silent for PAUSE_INTERVALS of its frame
    intervals (PAUSE_MIN at least), then it is 0, a pause. A pause read in mid-stream
    would reset the autoscaler's calm, or scale down there and lose the frames dealt to
    the instance that leaves."""

    def __init__(self) -> None:
        self.rate = 0.0  # Hz
        self._last: tuple[float, int] | None = None  # (when a new frame was seen, its id)

    @property
    def last_id(self) -> int | None:
        return self._last[1] if self._last else None

    def update(self, now: float, unique_id: int | None) -> float:
        if unique_id is None:
            self.rate = 0.0
            return self.rate
        if unique_id <= 0:  # a frame never stamped: no restart, and its id says nothing
            return self.rate
        last, self._last = self._last, (now, unique_id)
        if last is None or unique_id < last[1]:  # the first look, or the detector restarted
            self.rate = 0.0
        elif unique_id > last[1]:
            self.rate = (unique_id - last[1]) / (now - last[0])
        elif self.rate > 0 and now - last[0] < max(PAUSE_MIN, PAUSE_INTERVALS / self.rate):
            self._last = last  # between a slow input's frames
        else:
            self.rate = 0.0
        return self.rate

    def restart(self) -> None:
        """The pipeline stopped: the rate starts afresh at Run."""
        self._last = None


class Meter:
    """Reads the children's status channels and the input's frame count, and keeps the
    running totals across the children's restarts."""

    def __init__(self, ctx: Any):
        self._ctx = ctx
        self.figures = Figures()
        self.observation: Observation | None = None  # for the autoscaler
        self.input_missing = False
        self._last_measured = 0.0
        self._input = InputRate()
        self._processed = Counter()
        self._missed = Counter()
        self._late = Counter()
        self._errors = Counter()
        self._received = Counter()  # outputs the collector received
        self._refused_frames = RefusedFrames()
        self._overdue = OverdueFrames()
        self._floor = -math.inf  # the lowest id an instance could still deliver, last period
        self._collected_to = 0  # the last id the collector took
        self._restart_gap_from: int | None = None  # its last id, when it died
        self._restart_gaps = 0  # ids between a dead collector's last and its successor's first

    def read(self, instances: list[Instance], collector: Instance | None) -> None:
        """Read every child's status channel into its `report` (None if it did not answer)."""
        children = [*((i, InstanceStatus) for i in instances),
                    *([(collector, CollectorStatus)] if collector else [])]
        replies = self._ctx.get([c.status_channel for c, _ in children],
                                timeout=STATUS_TIMEOUT, throw=False)
        for (child, user_status), reply in zip(children, replies, strict=True):
            if isinstance(reply, Exception):
                child.report = None
                # A channel searched for before its server started is searched for
                # ever more rarely: search afresh while the child comes up.
                self._ctx.disconnect(child.status_channel)
                continue
            child.report = Report.read(reply.todict(), user_status)
            if child.reporting_since is None:
                child.reporting_since = time.monotonic()

    def input_id(self, channel: str) -> int | None:
        """The `uniqueId` of the input's latest frame; None if it does not answer."""
        try:
            reply = self._ctx.get(channel, request="field(uniqueId)", timeout=STATUS_TIMEOUT)
            return int(reply["uniqueId"])
        except TimeoutError:
            self._ctx.disconnect(channel)  # search afresh: the detector may start later
            return None
        except (RuntimeError, KeyError):  # p4p's errors, or not an NTNDArray
            return None

    def stopped(self) -> None:
        """The pipeline stopped: the input's rate starts afresh at Run."""
        self._input.restart()

    def collector_replaced(self) -> None:
        """A new collector replaced one: the ids between the two are lost."""
        self._restart_gap_from = self._collected_to

    def measure(self, unique_id: int | None, instances: dict[int, Instance],
                collector: Instance | None) -> None:
        """Update the figures and the observation from the reports just read and the
        input's latest `uniqueId`."""
        now = time.monotonic()
        period = now - self._last_measured if self._last_measured else 1.0
        self._last_measured = now
        figures = self.figures
        self.input_missing = unique_id is None
        figures.input_rate = self._input.update(now, unique_id)
        busy, refused_now, last_taken, queued = self._instances(period, instances)
        waiting = max(0, unique_id - last_taken) if unique_id and last_taken else 0
        figures.backlog = waiting + queued
        gaps_now, late_now, collected_to = self._collector(collector)
        # An instance that dies takes the count of its last outputs with it: a frame is
        # delivered when its instance reported it published or the collector received it.
        figures.frames_processed = max(self._processed.total, self._received.total)
        # a frame an instance refused is an error, not a lost frame, though it leaves a gap
        # tied to the last real id known (not an unstamped frame's 0, which would let the
        # refusals go before their gaps show): the detector's as last read, or an
        # instance's, whose report may be fresher on a loaded machine
        known = (max(self._input.last_id, last_taken) if self._input.last_id is not None
                 else 1 << 62)
        self._refused_frames.refused(now, known, refused_now)
        overdue_now = self._refused_frames.lost(now, gaps_now, collected_to)
        if collected_to is not None:
            self._overdue.gave_up(now, overdue_now, collected_to)
        self._overdue.came_late(late_now)
        # what an instance published a period ago has reached the collector since
        self._overdue.settle(now, self._floor)
        self._floor = self._oldest_deliverable(instances)
        missed = self._overdue.lost + self._restart_gaps
        figures.missed_rate = max(0, missed - figures.frames_missed) / period
        figures.frames_missed = missed
        # for the autoscaler, a gap filled within the period is no sign of falling behind
        self.observation = Observation(
            input_rate=figures.input_rate, processed_rate=figures.processed_rate,
            overdue=max(0, overdue_now - late_now), backlog=figures.backlog,
            instances=figures.instances, busy=busy, frame_time=figures.inference_time / 1e3)

    def reset(self) -> None:
        """Zero the running totals."""
        for counter in (self._processed, self._missed, self._late, self._errors,
                        self._received):
            counter.reset()
        self._refused_frames.reset()
        self._overdue.reset()
        self._restart_gaps = 0
        self.figures.frames_missed = self.figures.frames_processed = 0

    def _instances(self, period: float, instances: dict[int, Instance]
                   ) -> tuple[float, int, int, int]:
        """Rates, latency and the like from the instances' reports; the busy instances'
        worth, frames refused since the last period, the last frame id taken, frames queued."""
        figures = self.figures
        rates, busy, processed_now, last_taken, queued, refused_now = [], 0.0, 0, 0, 0, 0
        for index in range(1, max(instances, default=0) + 1):
            instance = instances.get(index)
            report = instance.report if instance else None
            if report is None or report.user is None:
                rates.append(0.0)
                continue
            counts = report.user.counts
            added = self._processed.add(instance.name, counts.published)
            rate = added / period
            rates.append(rate)
            processed_now += added
            busy += rate * counts.inference_time
            queued += counts.queued
            refused_now += self._errors.add(instance.name, counts.errors)
            # The status is up to a report period old: what the instance would have
            # taken by now, had it kept up, is compared with the detector's count.
            age = max(0.0, time.time() - report.last_object_time)
            last_taken = max(last_taken,
                             int(report.last_object_id + figures.input_rate * age))
        figures.instance_rates = rates
        figures.instances = len([i for i in instances.values() if i.report is not None])
        figures.processed_rate = processed_now / period
        figures.frame_errors = self._errors.total
        counts = [i.report.user.counts for i in instances.values()
                  if i.report is not None and i.report.user is not None]
        if counts:
            figures.latency_p50 = 1e3 * max(c.latency_p50 for c in counts)
            figures.latency_p99 = 1e3 * max(c.latency_p99 for c in counts)
            figures.inference_time = 1e3 * sum(c.inference_time for c in counts) / len(counts)
            figures.residual = sum(c.residual_mean for c in counts) / len(counts)
            spread = [c for c in counts if c.frames_over_noise > 0]  # those with frames enough
            figures.frames_over_noise = (sum(c.frames_over_noise for c in spread) / len(spread)
                                         if spread else 0.0)
            figures.explained = sum(c.explained for c in spread) / len(spread) if spread else 0.0
            figures.pixels_not_counts = max(c.pixels_not_counts for c in counts)
        return busy, refused_now, last_taken, queued

    @staticmethod
    def _oldest_deliverable(instances: dict[int, Instance]) -> float:
        """The lowest frame id any instance may still publish: its oldest frame not yet
        published, else the one after the last it took (inf when none can publish any)."""
        floor = math.inf
        for instance in instances.values():
            report = instance.report
            if report is None or report.user is None:
                return -math.inf  # it does not answer: it may hold any frame
            oldest = report.user.counts.oldest_waiting
            if oldest:
                floor = min(floor, oldest)
            elif report.last_object_id > 0:
                floor = min(floor, report.last_object_id + 1)
        return floor

    def _collector(self, collector: Instance | None) -> tuple[int, int, int | None]:
        """Frames the collector gave up waiting for since the last period, those that came
        after it gave up on them, and the last id it took (None when it does not report)."""
        if collector is None or collector.report is None:
            return 0, 0, None
        report = collector.report
        gaps_now = self._missed.add("collector", report.missed)
        late_now = self._late.add("collector", report.rejected)
        if report.user is not None:
            self._received.add("collector", report.user.received)
            self.figures.agreement = report.user.agreement
            self.figures.overlaps = report.user.overlaps
        self._collected_to = report.last_object_id
        if self._restart_gap_from is not None and report.first_object_id:
            self._restart_gaps += max(0, report.first_object_id - self._restart_gap_from - 1)
            self._restart_gap_from = None
        return gaps_now, late_now, report.last_object_id
