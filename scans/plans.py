"""Bluesky plans: `ptycho_scan`, a ptychography scan reconstructed live by the pipeline.

    from bluesky import RunEngine
    from ptychoedge.scans import Pipeline, SimDetector, ptycho_scan, stage_motors

    RE(ptycho_scan(detector, x, y, pipeline, pattern="spiral", points=100, step_um=0.25))

The plan configures the pipeline (model, target rate, automatic scaling), runs
it, and waits until it is Running with those settings applied; sets the
detector's frame positions to come from the stage (`ScanSource` = Stage); then
moves the stage over a raster or Fermat spiral and takes one frame at each
point. Documents:
- `primary` stream: per point, the motors' readbacks, the detector's frame
  counter (the frame's uniqueId) and the pipeline's rates, frames processed and
  frames lost;
- `final` stream, once the pipeline has placed the last frame in the mosaic:
  the scan's own figures (`scan-frames_processed`, `scan-frames_missed`: the
  frames of this scan reconstructed and lost), the pipeline's status (its
  counters are the IOC's running totals) and the stitched mosaic (and latest
  patch), amplitude and phase, as arrays;
- the start document: the scan positions, the pipeline's settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import Msg
from ophyd_async.core import StandardReadable, soft_signal_r_and_setter, wait_for_value

from ptychoedge.inference.scan_patterns import fermat_spiral_positions, raster_positions

if TYPE_CHECKING:  # the devices load libca; a plan needs them only when it runs
    from ophyd_async.epics.motor import Motor

    from ptychoedge.scans.devices import Pipeline, SimDetector

PATTERNS = ("raster", "spiral")
READY_TIMEOUT = 180.0  # s for the pipeline to start its instances (model loading is slow)
MOSAIC_TIMEOUT = 60.0  # s for the last frame to reach the mosaic


def scan_positions(pattern: str, points: int, step_um: float,
                   centre_um: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(points, 2) stage positions (x, y) in um: a raster, row by row, or a Fermat spiral.

    The same patterns as the detector's own scans (`ptychoedge.inference.scan_patterns`); a
    raster of `points` takes the first `points` of the smallest square that holds them.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    if not step_um > 0:
        raise ValueError(f"step must be positive, got {step_um} um")
    if pattern == "raster":
        side = int(np.ceil(np.sqrt(points)))
        positions = raster_positions(side, side, step_um)[:points]
    else:
        positions = fermat_spiral_positions(points, step_um)
    return positions + np.asarray(centre_um, dtype=float)


class ScanFigures(StandardReadable):
    """A scan's own frame counts: the pipeline's counters at its end less those at its start."""

    def __init__(self, name: str = "scan"):
        with self.add_children_as_readables():
            self.frames_processed, self._set_processed = soft_signal_r_and_setter(int, 0)
            self.frames_missed, self._set_missed = soft_signal_r_and_setter(int, 0)
        super().__init__(name=name)

    def set_counts(self, processed: int, missed: int) -> None:
        """Record the scan's frames processed and lost."""
        self._set_processed(processed)
        self._set_missed(missed)


def configure_pipeline(pipeline: Pipeline, *, model: str | None = None,
                       target_rate: float | None = None, auto_scale: bool | None = None,
                       timeout: float = READY_TIMEOUT) -> Generator[Msg, Any, None]:
    """Set the knobs given, run the pipeline, and wait until it runs with them applied."""
    settings: list[tuple[Any, Any]] = []
    if model is not None:
        settings.append((pipeline.model, model))
    if target_rate is not None:
        settings.append((pipeline.target_rate, float(target_rate)))
    if auto_scale is not None:
        settings.append((pipeline.auto_scale, "On" if auto_scale else "Off"))
    for signal, value in settings:
        yield from bps.mv(signal, value)
    yield from bps.mv(pipeline.run, "Run")

    async def applied() -> None:
        for signal, value in settings:  # the readback shows what the pipeline applied
            await wait_for_value(signal, value, timeout=timeout)
        await wait_for_value(pipeline.state, "Running", timeout=timeout)

    yield from bps.wait_for([applied])


def ptycho_scan(detector: SimDetector, x: Motor, y: Motor, pipeline: Pipeline, *,
                pattern: str = "spiral", points: int = 100, step_um: float = 0.25,
                centre_um: tuple[float, float] = (0.0, 0.0), model: str | None = None,
                target_rate: float | None = None, auto_scale: bool | None = None,
                new_mosaic: bool = True, ready_timeout: float = READY_TIMEOUT,
                mosaic_timeout: float = MOSAIC_TIMEOUT,
                md: dict[str, Any] | None = None) -> Generator[Msg, Any, str]:
    """Scan the stage over `pattern` with a frame at each point, reconstructed live.

    :param pattern: "raster" (row by row) or "spiral" (Fermat, golden angle)
    :param points: scan points; `step_um` apart (um), centred on `centre_um`
    :param model, target_rate, auto_scale: pipeline knobs to set first (None: as they are)
    :param new_mosaic: restart the detector's frame counter, so the mosaic starts afresh
    :return: the run's uid
    """
    positions = scan_positions(pattern, points, step_um, centre_um)
    yield from configure_pipeline(pipeline, model=model, target_rate=target_rate,
                                  auto_scale=auto_scale, timeout=ready_timeout)
    driver = detector.driver
    yield from bps.mv(driver.scan_source, "Stage")
    if new_mosaic:  # uniqueId back to 1: the collector starts a new mosaic
        yield from bps.mv(driver.array_counter, 0)
        yield from bps.wait_for([lambda: wait_for_value(driver.array_counter, 0,
                                                        timeout=ready_timeout)])
    first_frame = (yield from bps.rd(driver.array_counter)) + 1
    processed_before = yield from bps.rd(pipeline.frames_processed)
    missed_before = yield from bps.rd(pipeline.frames_missed)

    metadata = {
        "plan_name": "ptycho_scan",
        "plan_args": {"pattern": pattern, "points": points, "step_um": step_um,
                      "centre_um": list(centre_um), "model": model, "target_rate": target_rate,
                      "auto_scale": auto_scale, "new_mosaic": new_mosaic},
        "detectors": [detector.name, pipeline.name],
        "motors": [x.name, y.name],
        "num_points": len(positions),
        "num_intervals": len(positions) - 1,
        "scan_positions_um": positions.tolist(),
        "first_frame": int(first_frame),
        "frames_processed_before": int(processed_before),
        "frames_missed_before": int(missed_before),
        "hints": {"dimensions": [([x.user_readback.name], "primary"),
                                 ([y.user_readback.name], "primary")]},
        **(md or {}),
    }

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=metadata)
    def scan() -> Generator[Msg, Any, Any]:  # the decorated plan returns the run's uid
        last_start = time.time()
        for position_x, position_y in positions:
            yield from bps.checkpoint()
            yield from bps.mv(x, float(position_x), y, float(position_y))
            last_start = time.time()
            yield from bps.trigger_and_read([detector, pipeline, x, y])
        last_frame = yield from bps.rd(driver.array_counter)
        yield from bps.wait_for([lambda: pipeline.wait_for_mosaic(
            int(last_frame), last_start, mosaic_timeout)])
        # The status records refresh once a second: wait until every frame of the scan
        # shows as processed or as lost, so the final readings account for all of them.
        frames = len(positions)

        async def accounted() -> None:
            async def count() -> int:
                return (await pipeline.frames_processed.get_value() - processed_before
                        + await pipeline.frames_missed.get_value() - missed_before)

            deadline = time.monotonic() + mosaic_timeout
            while await count() < frames:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{pipeline.name}: {await count()} of {frames} frames "
                                       f"processed or lost after {mosaic_timeout} s")
                await asyncio.sleep(0.1)

        yield from bps.wait_for([accounted])
        figures = ScanFigures()
        yield from bps.wait_for([figures.connect])
        figures.set_counts(
            (yield from bps.rd(pipeline.frames_processed)) - processed_before,
            (yield from bps.rd(pipeline.frames_missed)) - missed_before)
        yield from bps.wait_for([lambda: pipeline.connect_images(mosaic_timeout)])
        yield from bps.trigger_and_read([figures, pipeline, pipeline.images], name="final")

    return (yield from scan())
