"""ophyd-async devices of the beamline and the pipeline, built from the PV spec.

- `Pipeline`: the pipeline IOC. Its knobs are configuration signals (set to the
  knob, read back from its `_RBV`), its status PVs are what it reads, and its
  images (`Recon:*`, `Mosaic:*`, NTNDArray over pvAccess) are `pva://` array
  signals in `Pipeline.images`, read when a plan asks for them.
- `SimDetector`: the simulated detector, triggered and counted as an
  areaDetector is (Multiple mode, NumImages, Acquire, the frame counter), from
  the cam1 records it has. ophyd-async's `adcore` wants PVs this detector does
  not serve (PortName_RBV, WaitForPlugins, the version records, plugins), so
  the trigger, acquire and data logic here are its own, in adcore's mould.
- `stage_motors`: the stage's motor records as `ophyd_async.epics.motor.Motor`.

Scalars go over Channel Access, images over pvAccess, as a Phoebus screen does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from bluesky.protocols import Reading
from event_model import DataKey
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    Array1D,
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    Device,
    ReadableDataProvider,
    SignalR,
    SignalRW,
    StandardDetector,
    StandardReadable,
    StandardReadableFormat,
    TriggerInfo,
    set_and_wait_for_value,
    wait_for_value,
)
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw
from ophyd_async.epics.motor import Motor

from ptychoedge.pvdb import detector, pipeline, stage
from ptychoedge.pvdb.spec import Kind, PvSpec

DATATYPES: dict[Kind, type] = {
    Kind.FLOAT: float, Kind.INT: int, Kind.ENUM: str, Kind.STRING: str,
    Kind.FLOAT_ARRAY: Array1D[np.float64],
}
HINTED_STATUS = ("InputRate_RBV", "ProcessedRate_RBV", "FramesMissed_RBV")


def attribute_name(pv_name: str) -> str:
    """The Python name of a PV: `cam1:AcquirePeriod` -> `acquire_period`."""
    name = pv_name.removeprefix("cam1:").removesuffix("_RBV").replace(":", "_")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _setting(prefix: str, spec: PvSpec):
    if spec.readback:
        return epics_signal_rw(DATATYPES[spec.kind], prefix + spec.readback_name,
                               prefix + spec.name)
    return epics_signal_rw(DATATYPES[spec.kind], prefix + spec.name)


def _status(prefix: str, spec: PvSpec) -> SignalR:
    return epics_signal_r(DATATYPES[spec.kind], prefix + spec.name)


# -- the pipeline -----------------------------------------------------------------------------


class PipelineImages(StandardReadable):
    """Pipeline NTNDArray images as `pva://` signals: the collector's, or `images`."""

    def __init__(self, prefix: str, name: str = "", images: tuple[str, ...] = pipeline.IMAGES):
        with self.add_children_as_readables():
            for image in images:
                setattr(self, attribute_name(image),
                        epics_signal_r(np.ndarray, f"pva://{prefix}{image}"))
        super().__init__(name=name)


class Pipeline(StandardReadable):
    """The pipeline IOC under `prefix` (`EDGE1:`)."""

    # Among the signals built from the spec, those the plans use by name
    model: SignalRW[str]
    target_rate: SignalRW[float]
    auto_scale: SignalRW[str]
    auto_adapt: SignalRW[str]
    refine_seconds: SignalRW[float]
    state: SignalR[str]
    frames_processed: SignalR[int]
    frames_missed: SignalR[int]
    residual: SignalR[float]
    message: SignalR[str]
    adapt_state: SignalR[str]
    adapt_model: SignalR[str]
    refine_state: SignalR[str]
    images: PipelineImages
    refined_images: PipelineImages

    def __init__(self, prefix: str, name: str = ""):
        self.prefix = prefix
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            for spec in pipeline.KNOBS:
                if spec.name != "Run":
                    setattr(self, attribute_name(spec.name), _setting(prefix, spec))
        self.run = _setting(prefix, next(s for s in pipeline.KNOBS if s.name == "Run"))
        self.reset_stats = _setting(prefix, pipeline.RESET_STATS)
        self.adapt = _setting(prefix, pipeline.ADAPT)
        self.refine = _setting(prefix, pipeline.REFINE)
        for fmt, hinted in ((StandardReadableFormat.HINTED_SIGNAL, True),
                            (StandardReadableFormat.CHILD, False)):
            with self.add_children_as_readables(fmt):
                for spec in pipeline.STATUS_PVS:
                    if (spec.name in HINTED_STATUS) == hinted:
                        setattr(self, attribute_name(spec.name), _status(prefix, spec))
        # Not a child: a reading at every scan point must not carry the images.
        # `connect_images` connects them when they are wanted.
        object.__setattr__(self, "images", PipelineImages(prefix))
        object.__setattr__(self, "refined_images",
                           PipelineImages(prefix, images=pipeline.REFINED_IMAGES))
        self._pva = None
        super().__init__(name=name)

    def set_name(self, name: str, *, child_name_separator: str | None = None) -> None:
        """Name the device and its children; `images` `<name>-images`, and so on."""
        super().set_name(name, child_name_separator=child_name_separator)
        for images in ("images", "refined_images"):
            getattr(self, images).set_name(
                f"{name}{child_name_separator or '-'}{images}" if name else "")

    async def connect_images(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect `images` and `refined_images` (served as long as the pipeline IOC runs)."""
        await self.images.connect(timeout=timeout)
        await self.refined_images.connect(timeout=timeout)

    async def mosaic_stamp(self) -> tuple[int, float]:
        """The uniqueId and time stamp (s) of the mosaic the collector published last."""
        if self._pva is None:
            from p4p.client.asyncio import Context

            self._pva = Context("pva", nt=False)
        value = await self._pva.get(f"{self.prefix}Mosaic:Phase",
                                    request="field(uniqueId,timeStamp)")
        stamp = value["timeStamp"]
        return int(value["uniqueId"]), stamp["secondsPastEpoch"] + 1e-9 * stamp["nanoseconds"]

    async def wait_for_mosaic(self, unique_id: int, since: float, timeout: float) -> None:
        """Wait until the mosaic holds frame `unique_id`, published after `since` (epoch s).

        The collector publishes every image together, the mosaic's phase last, with
        the uniqueId of the last frame it placed; `since` (the last frame's
        acquisition start) tells this scan's frames from an earlier scan's.
        """
        deadline = time.monotonic() + timeout
        while True:
            last, stamp = await self.mosaic_stamp()
            if last >= unique_id and stamp >= since:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the mosaic did not reach frame {unique_id} "
                                   f"within {timeout} s (it holds up to {last})")
            await asyncio.sleep(0.05)


# -- the detector -----------------------------------------------------------------------------


class SimDetectorDriver(Device):
    """The cam1 records: each setting (read from its `_RBV`) and each status record."""

    # Among the signals built from the spec, those the detector's logic and the plans use
    acquire: SignalRW[str]
    acquire_time: SignalRW[float]
    acquire_period: SignalRW[float]
    image_mode: SignalRW[str]
    num_images: SignalRW[int]
    array_counter: SignalRW[int]
    scan_source: SignalRW[str]
    size_x: SignalRW[int]
    size_y: SignalRW[int]
    data_type: SignalRW[str]
    manufacturer: SignalR[str]
    model: SignalR[str]

    def __init__(self, prefix: str, name: str = ""):
        # `prefix` is the detector's ($(D)); the spec's names carry the `cam1:`
        for spec in detector.SETTINGS:
            setattr(self, attribute_name(spec.name), _setting(prefix, spec))
        for spec in detector.STATUS_PVS:
            setattr(self, attribute_name(spec.name), _status(prefix, spec))
        # The Acquire record itself: the IOC puts it back to Done when an acquisition
        # ends, after the readbacks, so it is the last word on "finished".
        self.acquire_request = epics_signal_r(str, prefix + "cam1:Acquire")
        super().__init__(name=name)


class SimTriggerLogic(DetectorTriggerLogic):
    """Internal triggering: NumImages frames in Multiple mode, as areaDetector does."""

    def __init__(self, driver: SimDetectorDriver):
        self.driver = driver

    def config_sigs(self) -> set[SignalR]:
        """The settings a run's descriptor records: exposure, source, frame size and type."""
        return {self.driver.acquire_time, self.driver.acquire_period, self.driver.scan_source,
                self.driver.size_x, self.driver.size_y, self.driver.data_type,
                self.driver.manufacturer, self.driver.model}

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        """Set up `num` frames (0: Continuous) of `livetime` s, `deadtime` s apart."""
        settings: list[tuple[SignalRW[Any], Any]] = [
            (self.driver.image_mode, "Continuous" if num == 0 else "Multiple")]
        if num:
            settings.append((self.driver.num_images, num))
        if livetime:
            settings.append((self.driver.acquire_time, livetime))
            if deadtime:
                settings.append((self.driver.acquire_period, livetime + deadtime))
        # Each set completes when the record took it; the readback, which the
        # acquisition logic reads, follows a moment later.
        await asyncio.gather(*(set_and_wait_for_value(signal, value, timeout=DEFAULT_TIMEOUT)
                               for signal, value in settings))

    async def default_trigger_info(self) -> TriggerInfo:
        """One frame per event, internally triggered, at the detector's own exposure."""
        return TriggerInfo()


class SimAcquireLogic(DetectorAcquireLogic):
    """Acquire=1 starts; done when the counter has all frames and Acquire is back at Done."""

    def __init__(self, driver: SimDetectorDriver):
        self.driver = driver
        self._target: int | None = None
        self._timeout = DEFAULT_TIMEOUT

    async def start_acquiring(self) -> None:
        """Put Acquire, once the last acquisition has wound down, and note the frame to reach."""
        # A put while the last acquisition is still winding down would be undone by it
        await wait_for_value(self.driver.acquire_request, "Done", timeout=DEFAULT_TIMEOUT)
        mode, count, period, counter = await asyncio.gather(
            self.driver.image_mode.get_value(), self.driver.num_images.get_value(),
            self.driver.acquire_period.get_value(), self.driver.array_counter.get_value())
        frames = {"Single": 1, "Multiple": count}.get(mode)
        self._target = None if frames is None else counter + frames
        self._timeout = DEFAULT_TIMEOUT + (frames or 0) * period
        await self.driver.acquire.set("Acquire")

    async def wait_for_idle(self) -> None:
        """Wait until the counter holds every frame asked for and Acquire is back at Done."""
        if self._target is None:  # Continuous: nothing to wait for
            return
        target = self._target
        await wait_for_value(self.driver.array_counter, lambda count: count >= target,
                             timeout=self._timeout)
        await wait_for_value(self.driver.acquire_request, "Done", timeout=DEFAULT_TIMEOUT)

    async def ensure_stopped(self) -> None:
        """Stop an acquisition under way and wait until Acquire reads Done."""
        if await self.driver.acquire_request.get_value() != "Done":
            await self.driver.acquire.set("Done")
        await wait_for_value(self.driver.acquire, "Done", timeout=DEFAULT_TIMEOUT)


class _SignalsProvider(ReadableDataProvider):
    def __init__(self, signals: Sequence[SignalR]):
        self.signals = signals

    async def make_datakeys(self) -> dict[str, DataKey]:
        keys: dict[str, DataKey] = {}
        for described in await asyncio.gather(*(s.describe() for s in self.signals)):
            keys.update(described)
        return keys

    async def make_readings(self) -> dict[str, Reading]:
        readings: dict[str, Reading] = {}
        for read in await asyncio.gather(*(s.read(cached=False) for s in self.signals)):
            readings.update(read)
        return readings


class SimFrameDataLogic(DetectorDataLogic):
    """Per event: the frame counter (the last frame's uniqueId) and, if asked, the frame."""

    def __init__(self, driver: SimDetectorDriver, image: SignalR, read_frames: bool):
        self.signals = [driver.array_counter, *([image] if read_frames else [])]

    async def prepare_single(self, datakey_name: str) -> ReadableDataProvider:
        """What each event reads: the frame counter, and the frame if asked for."""
        return _SignalsProvider(self.signals)

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        """The frame counter, the field a live plot shows."""
        return [self.signals[0].name]


class SimDetector(StandardDetector):
    """The simulated detector under `prefix` (`SIM1:`): cam1 records and `Pva1:Image`."""

    def __init__(self, prefix: str, name: str = "", read_frames: bool = False):
        self.driver = SimDetectorDriver(prefix)
        self.image = epics_signal_r(np.ndarray, f"pva://{prefix}{detector.IMAGE}")
        self.add_detector_logics(SimTriggerLogic(self.driver), SimAcquireLogic(self.driver),
                                 SimFrameDataLogic(self.driver, self.image, read_frames))
        super().__init__(name=name)


# -- the stage --------------------------------------------------------------------------------


def stage_motors(prefix: str) -> tuple[Motor, Motor]:
    """The stage's x and y motor records under `prefix`, named `x` and `y`."""
    x, y = (Motor(prefix + stage.find(axis).name, name=axis) for axis in ("x", "y"))
    return x, y
