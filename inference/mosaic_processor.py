"""The mosaic processor that `pvapy-hpc-collector` runs over all inference instances.

    FILE=$(python -c 'import ptychoedge.inference.mosaic_processor as m; print(m.__file__)')
    pvapy-hpc-collector --input-channel 'EDGE1:recon:*' --producer-id-list 1,2 \\
        --processor-file $FILE \\
        --processor-class MosaicProcessor --processor-args '{"prefix": "EDGE1:"}' \\
        --skip-initial-updates 0

It places every patch at its scan position and publishes, at a display rate,
`$(P)Recon:Amplitude` and `$(P)Recon:Phase` (the latest patch) and
`$(P)Mosaic:Amplitude` and `$(P)Mosaic:Phase` (the whole sample), all NTNDArray
float32 images. A `uniqueId` lower than the last one seen means the detector
started a new scan, and a new mosaic begins.

pvapy's collector rejects every object whose id is not above the last one it
passed on while its cache holds any: after a detector restart (ids from 1 again)
within its cache timeout (5 s) of the last frame, every new frame would be
rejected, lost and counted as a late one. `follow_detector_restarts` teaches it
what a restart looks like: an id at or below the last one on a frame taken
after it (`dataTimeStamp`); such frames wait until the old scan's tail has gone
through, then start the new sequence. It also keeps what a producer channel sends
on connecting (see `Receipts`) out of the id sequence; the collector therefore
runs with `--skip-initial-updates 0`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pvaccess as pva
from pvapy.hpc.adImageProcessor import AdImageProcessor
from pvapy.hpc.dataCollector import DataCollector

from ptychoedge.inference.manifest import MODEL_DIR, ModelError, load_manifest
from ptychoedge.inference.mosaic import Mosaic

IMAGES = ("Recon:Amplitude", "Recon:Phase", "Mosaic:Amplitude", "Mosaic:Phase")
DEFAULTS = {"prefix": "EDGE1:", "model": "ptychonn-default", "modelDir": str(MODEL_DIR),
            "displayRate": 5.0}


def image_frame(image: np.ndarray, unique_id: int) -> pva.NtNdArray:
    ny, nx = image.shape
    frame = pva.NtNdArray()
    frame["uniqueId"] = int(unique_id)
    frame["dimension"] = [pva.PvDimension(nx, 0, nx, 1, False),
                          pva.PvDimension(ny, 0, ny, 1, False)]
    values = np.ascontiguousarray(image, dtype=np.float32).ravel()
    frame["value"] = {"floatValue": values}
    frame["compressedSize"] = frame["uncompressedSize"] = values.nbytes
    frame["attribute"] = [pva.NtAttribute("ColorMode", pva.PvInt(0))]
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
    except Exception:
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
        with self._lock:
            self.count = 0


RECEIPTS = Receipts()  # one collector per process


def follow_detector_restarts(collector_class=DataCollector) -> None:
    """Make pvapy's collector start a new id sequence when the detector starts again."""
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
            restarted = (last > 0 and when > last and self.collectorCacheMap
                         and self.lastObjectId is not None and objectId <= self.lastObjectId)
            if restarted or (held and when >= min(entry[0] for entry in held)):
                held.append((when, producerId, objectId, pvObject))
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
    def __init__(self, configDict: dict | None = None):  # noqa: N803 - pvapy's names
        super().__init__(configDict or {})
        follow_detector_restarts()
        self.config = {**DEFAULTS, **(configDict or {})}
        manifest = load_manifest(self.config["model"], Path(self.config["modelDir"]))
        self.mosaic = Mosaic(manifest.object_pixel_size, manifest.illumination())
        self.names = {image: self.config["prefix"] + image for image in IMAGES}
        self.latest: tuple[np.ndarray, np.ndarray] | None = None
        self.last_id = 0
        self.scans = 1
        self.placed = 0
        self.errors = 0
        self._changed = False
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._server: pva.PvaServer | None = None

    def configure(self, configDict):  # noqa: N803
        """A new model (its pixel size and probe) starts a new mosaic."""
        if "model" not in configDict or configDict["model"] == self.config["model"]:
            return
        try:
            manifest = load_manifest(configDict["model"], Path(self.config["modelDir"]))
        except ModelError as error:
            self.logger.warning("model refused: %s", error)
            self.errors += 1
            return
        with self._lock:
            self.mosaic = Mosaic(manifest.object_pixel_size,
                                 manifest.illumination())
            self.config["model"] = configDict["model"]
            self.scans += 1

    def start(self):
        self._server = self.pvaServer or pva.PvaServer()
        for name in self.names.values():
            self._server.addRecord(name, pva.NtNdArray())
        threading.Thread(target=self._display, daemon=True).start()

    def process(self, pvObject):  # noqa: N803
        unique_id = pvObject["uniqueId"]
        if unique_id == 0:  # a channel's initial value, before any output
            return None
        try:
            amplitude, phase, x, y = read_patch(pvObject)
        except Exception as error:
            self.logger.warning("output %s without a usable patch: %s", unique_id, error)
            self.errors += 1
            return None
        with self._lock:
            if unique_id < self.last_id:  # the detector started again: a new scan
                self.mosaic.reset()
                self.scans += 1
            self.last_id = unique_id
            self.mosaic.add(amplitude, phase, x, y)
            self.latest = (amplitude, phase)
            self.placed += 1
            self._changed = True
        return None

    def _display(self) -> None:
        period = 1.0 / float(self.config["displayRate"])
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
        self._quit.set()

    def resetStats(self):
        self.placed = self.errors = 0
        RECEIPTS.reset()

    def getStats(self):
        return {"placed": self.placed, "scans": self.scans, "errors": self.errors,
                "patches": self.mosaic.patches, "received": RECEIPTS.count,
                "model": self.config["model"]}

    def getStatsPvaTypes(self):
        return {"placed": pva.ULONG, "scans": pva.UINT, "errors": pva.UINT,
                "patches": pva.ULONG, "received": pva.ULONG, "model": pva.STRING}

    def getOutputPvObjectType(self, pvObject):  # noqa: N803
        return None
