r"""The mosaic processor that `pvapy-hpc-collector` runs over all inference instances.

    pvapy-hpc-collector --input-channel 'EDGE1:recon:*' --producer-id-list 1,2 \
        --processor-class ptychoedge.inference.mosaic_processor.MosaicProcessor \
        --processor-args '{"prefix": "EDGE1:collector:"}' --skip-initial-updates 0

It places every patch at its scan position and publishes, at a display rate,
`$(P)Recon:Amplitude` and `$(P)Recon:Phase` (the latest patch) and
`$(P)Mosaic:Amplitude` and `$(P)Mosaic:Phase` (the whole sample), all NTNDArray
float32 images. A `uniqueId` lower than the last one seen means the detector
started a new scan, and a new mosaic begins.

pvapy's collector passes objects on in id order, giving up on a missing id once
its cache is full or 5 s went by, and rejects every object whose id is not above
the last one it passed on while its cache holds any (with an empty cache, it takes
such an object for the start of a new sequence). `follow_detector_restarts`
teaches it to tell the two cases apart by when the frame was taken
(`dataTimeStamp`):
- a restart (ids from 1 again): an id at or below the last one on a frame taken
  after it. Such frames wait until the old scan's tail has gone through, then start
  the new sequence;
- a late output (an instance behind the others): an id at or below the last one on
  a frame taken before it. It is placed at once and counted as rejected (late), so
  the pipeline knows the gap it left was filled.
It also keeps what a producer channel sends on connecting (see `Receipts`) out of
the id sequence; the collector therefore runs with `--skip-initial-updates 0`. Its
arguments and status fields are those of pvdb/processors.py; among them, how well the
latest patches agree with the mosaic before them where they overlap (inference/mosaic.py),
which the fit guard reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pvaccess as pva
from pvapy.hpc.adImageProcessor import AdImageProcessor
from pvapy.hpc.dataCollector import DataCollector

from ptychoedge.inference.manifest import MODEL_DIR, ModelError, load_manifest
from ptychoedge.inference.mosaic import Mosaic, Overlap, agreement
from ptychoedge.pvdb.pipeline import IMAGES
from ptychoedge.pvdb.processors import REDRAW, CollectorArgs, CollectorStatus

# the latest patches whose agreement with the mosaic before them is reported, as the
# instances report the share explained over their latest 256 frames
AGREEMENT_WINDOW = 256


def image_frame(image: np.ndarray, unique_id: int,
                attributes: dict[str, tuple[float, str]] | None = None) -> pva.NtNdArray:
    """`image` as a float32 NTNDArray numbered `unique_id`, stamped now.

    `attributes` (name: (value, descriptor)) go beside ColorMode.
    """
    ny, nx = image.shape
    frame = pva.NtNdArray()
    frame["uniqueId"] = int(unique_id)
    frame["dimension"] = [pva.PvDimension(nx, 0, nx, 1, False),
                          pva.PvDimension(ny, 0, ny, 1, False)]
    values = np.ascontiguousarray(image, dtype=np.float32).ravel()
    frame["value"] = {"floatValue": values}
    frame["compressedSize"] = frame["uncompressedSize"] = values.nbytes
    frame["attribute"] = [pva.NtAttribute("ColorMode", pva.PvInt(0))]
    for name, (value, descriptor) in (attributes or {}).items():
        attribute = pva.NtAttribute(name, pva.PvDouble(float(value)))
        attribute["descriptor"] = descriptor
        frame["attribute"] = [*frame["attribute"], attribute]
    frame["timeStamp"] = pva.PvTimeStamp(time.time())
    return frame


def read_patch(pv_object) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Amplitude, phase and scan position (m) of one inference output."""
    n = pv_object["dimension"][0]["size"]
    values = np.asarray(pv_object["value"][0]["floatValue"]).reshape(2, n, n)
    attributes = {a["name"]: a["value"][0]["value"] for a in pv_object["attribute"]}
    return values[0], values[1], float(attributes["PosX"]), float(attributes["PosY"])


def taken_at(pv_object) -> float:
    """The frame's `dataTimeStamp` (s), 0 when it has none."""
    try:
        stamp = pv_object["dataTimeStamp"]
        return stamp["secondsPastEpoch"] + 1e-9 * stamp["nanoseconds"]
    except (pva.PvaException, LookupError, TypeError):
        return 0.0


class Receipts:
    """Outputs the collector received, each counted once, late ones included.

    An instance reports how many outputs it published only every report period, so
    the last ones of an instance that is killed reach the collector without ever
    being reported: the supervisor counts a frame delivered when either side saw it.
    What a monitor sends when it connects is no new output: a new instance's empty
    value (uniqueId 0), or, to a collector started again, the last output a channel
    published (taken before this collector started), or a repeat on a reconnection.
    """

    def __init__(self) -> None:
        self.count = 0
        self.started = time.time()
        self._last: dict[int, tuple[int, float]] = {}  # producer: (id, taken at) last seen
        self._lock = threading.Lock()

    def take(self, producer_id: int, object_id: int, when: float) -> bool:
        """Count an object from `producer_id`; whether it is a new output."""
        if object_id <= 0:
            return False
        with self._lock:
            last = self._last.get(producer_id)
            self._last[producer_id] = (object_id, when)
            if last == (object_id, when) or (last is None and when < self.started):
                return False
            self.count += 1
            return True

    def reset(self) -> None:
        """Count from 0 again."""
        with self._lock:
            self.count = 0


RECEIPTS = Receipts()  # one collector per process


def follow_detector_restarts(place_late: Callable[[object], None],
                             collector_class=DataCollector) -> None:
    """Make pvapy's collector start a new id sequence when the detector starts again.

    It hands late outputs to `place_late` instead of dropping them.
    """
    collector_class._place_late = staticmethod(place_late)  # one collector per process
    if getattr(collector_class, "_follows_restarts", False):
        return
    add, take = collector_class.addObjectToCache, collector_class.getObjectsFromCache

    def add_object(self, producerId, objectId, pvObject):  # noqa: N803 - pvapy's names
        when = taken_at(pvObject)
        if not RECEIPTS.take(producerId, objectId, when):
            # No new output (see Receipts). In the id sequence it would pass for a late
            # frame (rejected, taken off the missed count) or start a new sequence
            # (every id between it and the next frame counted missed).
            return
        with self.cacheLock:
            held = self.__dict__.setdefault("_next_scan", [])
            last = self.__dict__.get("_last_taken_at", 0.0)
            behind = self.lastObjectId is not None and objectId <= self.lastObjectId
            restarted = last > 0 and when > last and self.collectorCacheMap and behind
            if restarted or (held and when >= min(entry[0] for entry in held)):
                held.append((when, producerId, objectId, pvObject))
                return
            late = behind and when <= last
            if late:
                self.nRejected += 1
        if late:
            self._place_late(pvObject)
            return
        add(self, producerId, objectId, pvObject)

    def take_objects(self):
        objects = take(self)
        release = []
        with self.cacheLock:
            if objects:
                self._last_taken_at = max(self.__dict__.get("_last_taken_at", 0.0),
                                          max(taken_at(o) for _, o in objects))
            held = self.__dict__.get("_next_scan")
            if held and not self.collectorCacheMap:  # the old scan is through: the new one
                release, self._next_scan = held, []
                self.lastObjectId = None
        for _, producer_id, object_id, pv_object in release:
            add(self, producer_id, object_id, pv_object)
        return objects

    collector_class.addObjectToCache = add_object
    collector_class.getObjectsFromCache = take_objects
    collector_class._follows_restarts = True


class MosaicProcessor(AdImageProcessor):
    """Stitches every instance's patches into a mosaic of the sample and serves its images.

    pvapy calls the camelCase methods; their arguments and the status they report
    are `CollectorArgs` and `CollectorStatus` of pvdb/processors.py.
    """

    def __init__(self, configDict: dict | None = None):  # noqa: N803 - pvapy's names
        """Load the model's geometry that `configDict` (`CollectorArgs`) names.

        Raises:
            ValueError: the model cannot be had.
        """
        super().__init__(configDict or {})
        follow_detector_restarts(self.place_late)
        self.args = CollectorArgs.from_args(configDict or {})
        self.model = self.args.model
        manifest = load_manifest(self.model, self._model_dir)
        self.mosaic = Mosaic.for_model(manifest)
        # how the latest patches compared with the mosaic before them (None: met none)
        self.overlaps: deque[Overlap | None] = deque(maxlen=AGREEMENT_WINDOW)
        self.names = {image: self.args.prefix + image for image in IMAGES}
        self.latest: tuple[np.ndarray, np.ndarray] | None = None
        self.last_id = 0
        self.scans = 1
        self.placed = 0
        self.errors = 0
        self._changed = False
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._server: pva.PvaServer | None = None

    @property
    def _model_dir(self) -> Path:
        return Path(self.args.model_dir or MODEL_DIR)

    def configure(self, configDict):  # noqa: N803
        """A new model (its pixel size and probe) starts a new mosaic.

        It starts from the scan so far as the model redrew it where `redraw` names such a
        mosaic file (an adaptation's), else empty.
        """
        if "model" not in configDict or configDict["model"] == self.model:
            return
        try:
            manifest = load_manifest(configDict["model"], self._model_dir)
        except ModelError as error:
            self.logger.warning("model refused: %s", error)
            self.errors += 1
            return
        mosaic = Mosaic.for_model(manifest)
        if configDict.get(REDRAW):
            try:
                mosaic = Mosaic.load(Path(configDict[REDRAW]))
            except (OSError, ValueError, KeyError) as error:
                self.logger.warning("redrawn scan not taken: %s", error)
                self.errors += 1
        with self._lock:
            self.mosaic = mosaic
            self.overlaps.clear()
            self.model = configDict["model"]
            self.scans += 1
            self._changed = self.latest is not None  # the redrawn scan shown at once

    def start(self):
        """Serve the images, and update them at the display rate."""
        self._server = self.pvaServer or pva.PvaServer()
        for name in self.names.values():
            self._server.addRecord(name, pva.NtNdArray())
        threading.Thread(target=self._display, daemon=True).start()

    def process(self, pvObject):  # noqa: N803
        """Place one output's patch; a lower id than the last starts a new scan's mosaic."""
        unique_id = pvObject["uniqueId"]
        if unique_id == 0:  # a channel's initial value, before any output
            return None
        if (patch := self._patch(pvObject)) is None:
            return None
        amplitude, phase, x, y = patch
        with self._lock:
            if unique_id < self.last_id:  # the detector started again: a new scan
                self.mosaic.reset()
                self.overlaps.clear()
                self.scans += 1
            self.last_id = unique_id
            self.overlaps.append(self.mosaic.add(amplitude, phase, x, y))
            self.latest = (amplitude, phase)
            self.placed += 1
            self._changed = True
        return None

    def place_late(self, pv_object) -> None:
        """Place the patch of an output that came after later ones: this scan's."""
        if (patch := self._patch(pv_object)) is None:
            return
        with self._lock:
            self.overlaps.append(self.mosaic.add(*patch))
            self.placed += 1
            self._changed = self.latest is not None

    def _patch(self, pv_object) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        try:
            return read_patch(pv_object)
        except (pva.PvaException, LookupError, TypeError, ValueError) as error:
            self.logger.warning("output %s without a usable patch: %s",
                                pv_object["uniqueId"], error)
            self.errors += 1
            return None

    def _display(self) -> None:
        period = 1.0 / float(self.args.display_rate)
        while not self._quit.wait(period):
            with self._lock:
                if not self._changed:
                    continue
                self._changed = False
                amplitude, phase = self.latest
                mosaic_amplitude, mosaic_phase = self.mosaic.images()
                unique_id = self.last_id
            for image, data in zip(IMAGES, (amplitude, phase, mosaic_amplitude, mosaic_phase),
                                   strict=True):
                self._server.update(self.names[image], image_frame(data, unique_id))

    def stop(self):
        """Stop updating the images."""
        self._quit.set()

    def resetStats(self):
        """Zero the counts `getStats` reports (the mosaic stays)."""
        self.placed = self.errors = 0
        RECEIPTS.reset()

    def getStats(self):
        """The `CollectorStatus` by wire names."""
        with self._lock:
            overlaps = [overlap for overlap in self.overlaps if overlap is not None]
        judged = agreement(overlaps)
        return CollectorStatus(placed=self.placed, scans=self.scans, errors=self.errors,
                               patches=self.mosaic.patches, received=RECEIPTS.count,
                               model=self.model,
                               agreement=judged if math.isfinite(judged) else 0.0,
                               overlaps=len(overlaps) if math.isfinite(judged) else 0
                               ).to_stats()

    def getStatsPvaTypes(self):
        """The pvaccess type of each field `getStats` reports."""
        return {name: getattr(pva, kind) for name, kind in CollectorStatus.pva_types().items()}

    def getOutputPvObjectType(self, pvObject):  # noqa: N803
        """None: the collector serves its images itself, on no output channel."""
        return None
