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

With `adapt=True` the pipeline adapts its model to the scan (iocs/adaptation.py), and
the plan waits until the adaptation has ended: once the scan's frames are all
published it puts `Adapt`, and the pipeline learns from the scan's last AdaptFrames
frames (its frame ring keeps them). Two more streams:
- `adapting`: the pipeline's status (AdaptState, AdaptProgress, AdaptLoss...) once a
  second while the adaptation works;
- `adaptation`, once it has ended: the model before and after, the adapted model, the
  outcome (kept, set aside, failed), Message_RBV, the residual before (Residual_RBV at
  the end of the scan) and after, with where the latter comes from, the adapted
  model's lineage (its manifest's `training`, read from `model_dir` when given), and
  the images again: the scan redrawn by the adapted model once it was swapped in.

With `refine=True` the plan then puts `Refine` (iocs/refinement.py) and waits until the
kept frames' image has been refined through the physics (for `refine_seconds`, the
RefineSeconds knob, when given), then reads `refinement`: the pipeline's status
(RefineState, RefineError, RefinedResolution, Message...) and the refined images,
amplitude (filtered to that resolution) and phase.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import Msg
from ophyd_async.core import StandardReadable, soft_signal_r_and_setter, wait_for_value

from ptychoedge.inference.resolution import with_half_scans
from ptychoedge.inference.scan_patterns import fermat_spiral_positions, raster_positions

if TYPE_CHECKING:  # the devices load libca; a plan needs them only when it runs
    from ophyd_async.epics.motor import Motor

    from ptychoedge.scans.devices import Pipeline, SimDetector

PATTERNS = ("raster", "spiral")
READY_TIMEOUT = 180.0  # s for the pipeline to start its instances (model loading is slow)
MOSAIC_TIMEOUT = 60.0  # s for the last frame to reach the mosaic
ADAPT_TIMEOUT = 1800.0  # s for an adaptation to collect, train, check and swap
START_TIMEOUT = 10.0  # s for the IOC to take up an Adapt or Refine put (it looks once a second)
READ_PERIOD = 1.0  # s between readings of an adaptation or refinement at work: the IOC's refresh
ADAPT_BUSY = ("Collecting", "Training", "Checking", "Swapping")
REFINE_BUSY = ("Collecting", "Refining")
REFINE_TIMEOUT = 600.0  # s beyond RefineSeconds for the ring and the network's first image
REJECTED = "rejected"  # where a model that failed its check goes (inference/adaptation.py)


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


class AdaptationFigures(StandardReadable):
    """What an adaptation at the end of a scan did: the models, residuals, outcome, lineage."""

    FIELDS = {"model_before": str, "model_after": str, "adapted_model": str, "outcome": str,
              "message": str, "residual_before": float, "residual_after": float,
              "residual_after_source": str, "lineage": str}

    def __init__(self, name: str = "adaptation"):
        self._setters: dict[str, Any] = {}
        with self.add_children_as_readables():
            for field, datatype in self.FIELDS.items():
                signal, self._setters[field] = soft_signal_r_and_setter(datatype, datatype())
                setattr(self, field, signal)
        super().__init__(name=name)

    def set_figures(self, **figures: Any) -> None:
        """Record the figures given, by field name."""
        for field, value in figures.items():
            self._setters[field](value)


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
                mosaic_timeout: float = MOSAIC_TIMEOUT, adapt: bool = False,
                adapt_timeout: float = ADAPT_TIMEOUT, model_dir: str | Path | None = None,
                refine: bool = False, refine_seconds: float | None = None,
                md: dict[str, Any] | None = None) -> Generator[Msg, Any, str]:
    """Scan the stage over `pattern` with a frame at each point, reconstructed live.

    :param pattern: "raster" (row by row) or "spiral" (Fermat, golden angle)
    :param points: scan points; `step_um` apart (um), centred on `centre_um`
    :param model, target_rate, auto_scale: pipeline knobs to set first (None: as they are)
    :param new_mosaic: restart the detector's frame counter, so the mosaic starts afresh
    :param adapt: adapt the model to the scan's frames and wait, up to `adapt_timeout` s,
        until the adaptation has ended (the `adapting` and `adaptation` streams)
    :param model_dir: the pipeline IOC's `--model-dir`, where the plan reads the adapted
        model's manifest (lineage, validation residual); None: only what the PVs say
    :param refine: refine the scan's image through the physics, after any adaptation, and
        wait until it is done (the `refinement` stream); `refine_seconds` sets how long
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
    model_before = yield from bps.rd(pipeline.model)
    processed_before = yield from bps.rd(pipeline.frames_processed)
    missed_before = yield from bps.rd(pipeline.frames_missed)

    metadata = {
        "plan_name": "ptycho_scan",
        "plan_args": {"pattern": pattern, "points": points, "step_um": step_um,
                      "centre_um": list(centre_um), "model": model, "target_rate": target_rate,
                      "auto_scale": auto_scale, "new_mosaic": new_mosaic, "adapt": adapt,
                      "refine": refine, "refine_seconds": refine_seconds,
                      "model_dir": None if model_dir is None else str(model_dir)},
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
        if adapt:
            residual_before = yield from bps.rd(pipeline.residual)
            started = yield from request_adaptation(pipeline)
            yield from record_adaptation(pipeline, started, model_before, residual_before,
                                         adapt_timeout, model_dir)
        if refine:
            yield from refine_image(pipeline, refine_seconds)

    return (yield from scan())


def refine_image(pipeline: Pipeline, seconds: float | None) -> Generator[Msg, Any, None]:
    """Put Refine 1, wait until the refinement has ended, and read `refinement`."""
    if seconds is not None:
        yield from bps.mv(pipeline.refine_seconds, float(seconds))
    seconds = yield from bps.rd(pipeline.refine_seconds)
    yield from bps.mv(pipeline.refine, 1)
    deadline = time.monotonic() + START_TIMEOUT
    started = True
    while (yield from bps.rd(pipeline.refine_state)) not in REFINE_BUSY:
        if time.monotonic() > deadline:  # refused at once: Message_RBV says why
            started = False
            break
        yield from bps.sleep(0.1)
    whole = with_half_scans(seconds)
    deadline = time.monotonic() + whole + REFINE_TIMEOUT
    while started and (yield from bps.rd(pipeline.refine_state)) in REFINE_BUSY:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pipeline.name}: the refinement is still going after "
                               f"{whole + REFINE_TIMEOUT:.0f} s")
        yield from bps.sleep(READ_PERIOD)
    yield from bps.trigger_and_read([pipeline, pipeline.refined_images], name="refinement")


def request_adaptation(pipeline: Pipeline) -> Generator[Msg, Any, bool]:
    """Put Adapt 1; whether the adaptation started (AdaptState_RBV left Idle for its work)."""
    yield from bps.mv(pipeline.adapt, 1)
    deadline = time.monotonic() + START_TIMEOUT
    while (yield from bps.rd(pipeline.adapt_state)) not in ADAPT_BUSY:
        if time.monotonic() > deadline:  # refused at once: Message_RBV says why
            return False
        yield from bps.sleep(0.1)
    return True


def record_adaptation(pipeline: Pipeline, started: bool, model_before: str,
                      residual_before: float, timeout: float,
                      model_dir: str | Path | None) -> Generator[Msg, Any, None]:
    """Read the pipeline into `adapting` until the adaptation ends, then `adaptation`."""
    deadline = time.monotonic() + timeout
    state = yield from bps.rd(pipeline.adapt_state)
    while started:
        yield from bps.trigger_and_read([pipeline], name="adapting")
        state = yield from bps.rd(pipeline.adapt_state)
        if state not in ADAPT_BUSY:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pipeline.name}: the adaptation is still {state} after "
                               f"{timeout} s")
        yield from bps.sleep(READ_PERIOD)

    model_after = yield from bps.rd(pipeline.model)
    adapted = yield from bps.rd(pipeline.adapt_model)
    if not started or state == "Failed":
        outcome = "failed"
    elif adapted and model_after == adapted != model_before:
        outcome = "kept"
    else:
        outcome = "set aside"
    manifest, manifest_path = None, None
    if model_dir is not None and outcome != "failed":
        manifest_path = Path(model_dir) / ("" if outcome == "kept" else REJECTED) / (
            f"{adapted}.json")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
    if manifest is not None:
        lineage = {"source": str(manifest_path), **manifest.get("training", {})}
    else:
        lineage = {"source": "the PVs (no manifest read: no model_dir given, or none found)",
                   "parent": model_before, "model": adapted if outcome != "failed" else ""}
    if outcome == "kept":
        # No frames go through the new model after the scan: its own figure stands in.
        residual_p50 = (manifest or {}).get("validation", {}).get("residual_p50")
        residual_after = float("nan") if residual_p50 is None else float(residual_p50)
        source = ("the adapted model's validation residual_p50 (its manifest); no frames "
                  "went through it after the swap" if residual_p50 is not None else
                  "none: no frames went through the new model and no manifest was read")
    else:
        residual_after = yield from bps.rd(pipeline.residual)
        source = f"Residual_RBV: {model_after}, still running"
    figures = AdaptationFigures()
    yield from bps.wait_for([figures.connect])
    figures.set_figures(
        model_before=model_before, model_after=model_after, adapted_model=adapted,
        outcome=outcome, message=(yield from bps.rd(pipeline.message)),
        residual_before=float(residual_before), residual_after=residual_after,
        residual_after_source=source, lineage=json.dumps(lineage))
    # the images: the scan as the adapted model redrew it, where one was swapped in
    yield from bps.trigger_and_read([figures, pipeline, pipeline.images], name="adaptation")
