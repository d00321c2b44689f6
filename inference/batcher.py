"""Frames in, reconstructions out, in batches, on a thread of its own.

`Batcher` gathers queued frames into batches of up to `batch_size`, waiting at
most `max_wait` seconds for a batch to fill, runs them through the current
`Reconstructor`, and hands every result to `publish`. The reconstructor can be
swapped at any moment: the batch in flight finishes with the old one, the next
starts with the new one, and nothing queued is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from operator import add
from typing import Any, NamedTuple

import numpy as np

from ptychoedge.inference.backends import Backend
from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.preprocess import FrameError
from ptychoedge.inference.quality import Fit, Spread

log = logging.getLogger(__name__)

LATENCY_WINDOW = 2000  # latest frames the percentiles are taken over
# The share of the frames' variation the answers explain is taken over the latest
# SPREAD_WINDOW frames (kept as sums of SPREAD_BLOCK frames: two images each), and said
# only from SPREAD_BLOCK frames on: over fewer, noise decides it
SPREAD_WINDOW, SPREAD_BLOCK = 256, 32


@dataclass
class Frame:
    """A detector frame and what must travel with it to the output."""

    image: np.ndarray
    unique_id: int
    received: float = field(default_factory=time.monotonic)
    context: Any = None  # the caller's: time stamps, attributes


@dataclass
class Result:
    frame: Frame
    amplitude: np.ndarray
    phase: np.ndarray
    residual: float
    latency: float  # s from receipt to result


class BatchResult(NamedTuple):
    patches: np.ndarray  # (n, 2, s, s) amplitude and phase
    residuals: np.ndarray  # (n,) see quality.py
    spread: Spread  # of these frames, and how much of it the patches explain
    not_counts: np.ndarray  # (n,) pixels of each frame that are no counts, the mask's aside


class Reconstructor:
    """A loaded model on a backend, with its preprocessing and quality check."""

    def __init__(self, backend: Backend, manifest: Manifest):
        self.backend = backend
        self.manifest = manifest
        self.preprocessing = manifest.preprocessing
        self.fit = Fit.of(manifest)

    def __call__(self, images: list[np.ndarray]) -> BatchResult:
        binned = np.concatenate([self.preprocessing.binned(image) for image in images])
        output = self.backend.infer(self.preprocessing.normalise(binned))
        return BatchResult(output, *self.fit(binned, output[:, 0], output[:, 1]),
                           np.array([self._not_counts(image) for image in images]))

    def _not_counts(self, image: np.ndarray) -> int:
        """Pixels outside the model's mask that read the pixel type's maximum or below 0:
        what detectors write in their gaps and dead pixels (a saturated pixel reads the
        maximum too)."""
        not_counts = image == np.iinfo(image.dtype).max
        if np.issubdtype(image.dtype, np.signedinteger):
            not_counts |= image < 0
        mask = self.preprocessing.mask
        return int(np.count_nonzero(not_counts if mask is None else not_counts & ~mask))


class Batcher:
    def __init__(self, reconstructor: Reconstructor, publish: Callable[[Result], None],
                 batch_size: int = 8, max_wait: float = 0.005, first_delay: float = 0.0):
        self.reconstructor = reconstructor
        self.publish = publish
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.first_delay = first_delay  # s the first frame is held before anything is published
        self._queue: queue.Queue[Frame | None] = queue.Queue()
        self._in_flight = 0  # uniqueId of the first frame of the batch being gathered or run
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self.reset_stats()
        self._thread.start()

    # -- what callers use -----------------------------------------------------

    def submit(self, frame: Frame) -> None:
        self._queue.put(frame)

    def reject(self, kind: str) -> None:
        """Count a frame that could not be taken, by the kind of fault."""
        with self._lock:
            self.errors[kind] += 1

    def swap(self, reconstructor: Reconstructor) -> None:
        with self._lock:  # the old model's residuals say nothing of the new one's fit
            self.residuals.clear()
            self.spreads.clear()
            self.not_counts.clear()  # counted outside the old model's mask
            self.reconstructor = reconstructor  # read once per batch by the worker

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def oldest_waiting(self) -> int:
        """The uniqueId of the oldest frame taken and not yet published or refused; 0 if none."""
        if in_flight := self._in_flight:
            return in_flight
        with self._queue.mutex:
            return next((f.unique_id for f in self._queue.queue if f is not None), 0)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def reset_stats(self) -> None:
        with self._lock:
            self.started = time.monotonic()
            self.published = 0
            self.batches = 0
            self.batched_frames = 0
            self.inference_seconds = 0.0
            self.errors: Counter[str] = Counter()
            self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
            self.residuals: deque[float] = deque(maxlen=LATENCY_WINDOW)
            self.not_counts: deque[int] = deque(maxlen=SPREAD_WINDOW)
            self.spreads: deque[Spread] = deque()  # of the latest SPREAD_WINDOW frames

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            latencies = np.array(self.latencies) if self.latencies else np.zeros(1)
            return {
                "published": self.published,
                "rate": self.published / elapsed,
                "batchFill": (self.batched_frames / self.batches / self.batch_size
                              if self.batches else 0.0),
                "latencyP50": float(np.percentile(latencies, 50)),
                "latencyP99": float(np.percentile(latencies, 99)),
                "inferenceTime": (self.inference_seconds / self.batched_frames
                                  if self.batched_frames else 0.0),
                "residualMean": float(np.mean(self.residuals)) if self.residuals else 0.0,
                "pixelsNotCounts": (float(np.mean(self.not_counts)) if self.not_counts
                                    else 0.0),
                **self._spread_figures(),
                "queued": self.queued,
                "oldestWaiting": self.oldest_waiting,
                "errors": sum(self.errors.values()),
                **{f"errors_{kind}": count for kind, count in self.errors.items()},
            }

    def _spread_figures(self) -> dict[str, float]:
        frames_over_noise, explained = 0.0, 0.0
        if sum(spread.frames for spread in self.spreads) >= SPREAD_BLOCK:
            frames_over_noise, explained = reduce(add, self.spreads).figures()
        return {"framesOverNoise": frames_over_noise, "explained": explained}

    def _keep_spread(self, spread: Spread) -> None:
        if self.spreads and self.spreads[-1].frames < SPREAD_BLOCK:
            self.spreads[-1] += spread
        else:
            self.spreads.append(spread)
        while sum(s.frames for s in self.spreads) - self.spreads[0].frames >= SPREAD_WINDOW:
            self.spreads.popleft()

    # -- the worker -------------------------------------------------------------

    def _next_batch(self, first: Frame | None = None) -> tuple[list[Frame], bool]:
        first = first or self._queue.get()
        if first is None:
            return [], True
        self._in_flight = first.unique_id
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.batch_size:
            try:
                frame = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if frame is None:
                return batch, True
            batch.append(frame)
        return batch, False

    def _run(self) -> None:
        first = self._queue.get()
        if first is None:
            return
        time.sleep(max(0.0, first.received + self.first_delay - time.monotonic()))
        done = False
        while not done:
            batch, done = self._next_batch(first)
            first = None
            if batch:
                try:
                    self._process(batch)
                except Exception:  # a fault of ours must not stop every later frame
                    log.exception("a batch of %d failed after inference", len(batch))
                    with self._lock:
                        self.errors["inference"] += len(batch)
            self._in_flight = 0

    def _process(self, batch: list[Frame]) -> None:
        reconstructor = self.reconstructor
        started = time.monotonic()
        try:
            result = reconstructor([frame.image for frame in batch])
        except FrameError:  # one bad frame must not take the batch with it
            for frame in batch:
                self._process_alone(frame, reconstructor)
            return
        except Exception:
            log.exception("inference failed on a batch of %d", len(batch))
            with self._lock:
                self.errors["inference"] += len(batch)
            return
        self._finish(batch, result, time.monotonic() - started, reconstructor)

    def _process_alone(self, frame: Frame, reconstructor: Reconstructor) -> None:
        started = time.monotonic()
        try:
            result = reconstructor([frame.image])
        except FrameError as error:
            log.warning("frame %d refused: %s", frame.unique_id, error)
            self.reject(error.kind)
            return
        self._finish([frame], result, time.monotonic() - started, reconstructor)

    def _finish(self, batch: list[Frame], output: BatchResult, seconds: float,
                made_by: Reconstructor) -> None:
        # A batch the old model finished after a swap says nothing of the new one's fit (its
        # patches may not even be the new one's size). The spread is kept before the frames
        # count as published: a status that counts them has their spread.
        with self._lock:
            current = made_by is self.reconstructor
            if current:
                self._keep_spread(output.spread)
                self.not_counts.extend(output.not_counts)
        for frame, patch, residual in zip(batch, output.patches, output.residuals, strict=True):
            result = Result(frame, patch[0], patch[1], float(residual),
                            time.monotonic() - frame.received)
            try:
                self.publish(result)
            except Exception:
                log.exception("could not publish frame %d", frame.unique_id)
                self.reject("publish")
                continue
            with self._lock:
                self.published += 1
                self.latencies.append(result.latency)
                if current:
                    self.residuals.append(result.residual)
        with self._lock:
            self.batches += 1
            self.batched_frames += len(batch)
            self.inference_seconds += seconds
