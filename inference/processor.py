"""The PtychoNN processor that `pvapy-hpc-consumer` runs, one per inference instance.

    FILE=$(python -c 'import ptychoedge.inference.processor as p; print(p.__file__)')
    pvapy-hpc-consumer --input-channel SIM1:Pva1:Image --output-channel EDGE1:recon:1 \\
        --processor-file $FILE \\
        --processor-class PtychoNNProcessor \\
        --processor-args '{"model": "ptychonn-default", "backend": "onnxruntime", "batchSize": 8}'

For every frame it publishes an NTNDArray of shape [x, y, 2] (amplitude, then
phase, float32) with the frame's `uniqueId`, both time stamps, the frame's
attributes (the scan position among them) and three more: `Latency` (s, receipt
to publication), `Residual` (the diffraction residual, see quality.py) and
`Model`. `configure` (the framework's control channel) changes the model, the
backend, the precision or the batch while frames keep flowing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pvaccess as pva
from pvapy.hpc.adImageProcessor import AdImageProcessor

from ptychoedge.inference.backends import open_backend
from ptychoedge.inference.batcher import Batcher, Frame, Reconstructor, Result
from ptychoedge.inference.frames import CodecUnavailable, decode_frame
from ptychoedge.inference.manifest import MODEL_DIR, ModelError, load_model
from ptychoedge.inference.preprocess import FrameError

log = logging.getLogger(__name__)

ERROR_KINDS = ("rank", "empty", "pixel_type", "too_small", "too_large", "decode", "unique_id",
               "inference", "publish")
DEFAULTS = {"model": "ptychonn-default", "modelDir": str(MODEL_DIR), "backend": "torch",
            "precision": "fp32", "batchSize": 8, "maxWait": 0.005, "threads": 1,
            "firstDelay": 0.0}
# What the control channel may change; the model directory, for one, is fixed at start.
RUNTIME_KEYS = ("model", "backend", "precision", "batchSize", "maxWait")


def _attribute(name: str, value: Any, descriptor: str = "") -> dict:
    kind = pva.PvString(value) if isinstance(value, str) else pva.PvDouble(float(value))
    return {"name": name, "value": kind, "descriptor": descriptor}


class OutputFrames:
    """NTNDArray [x, y, 2] outputs: amplitude and phase with the frame's stamps and position.

    One object is refilled for every output (the server copies what it publishes):
    building a new NtNdArray costs more than a small model's inference.
    """

    def __init__(self) -> None:
        self.frame = pva.NtNdArray()
        self.size = 0

    def fill(self, result: Result, model: str) -> pva.NtNdArray:
        time_stamp, data_time_stamp, attributes = result.frame.context
        frame, n = self.frame, result.amplitude.shape[-1]
        if n != self.size:
            frame["dimension"] = [pva.PvDimension(n, 0, n, 1, False),
                                  pva.PvDimension(n, 0, n, 1, False),
                                  pva.PvDimension(2, 0, 2, 1, False)]
            frame["compressedSize"] = frame["uncompressedSize"] = 2 * n * n * 4
            self.size = n
        frame["uniqueId"] = result.frame.unique_id
        frame["value"] = {"floatValue": np.stack([result.amplitude, result.phase]).astype(
            np.float32).ravel()}
        frame["timeStamp"] = time_stamp
        frame["dataTimeStamp"] = data_time_stamp
        frame["attribute"] = [
            *(_attribute(name, value, descriptor) for name, value, descriptor in attributes),
            _attribute("Latency", result.latency, "Receipt to publication (s)"),
            _attribute("Residual", result.residual, "Diffraction residual (0 = perfect fit)"),
            _attribute("Model", model, "Model that made this patch"),
        ]
        return frame


def _frame_attributes(pv_object: Any) -> list[tuple[str, Any, str]]:
    """The numeric attributes of a frame (PosX, PosY, ...), ColorMode aside."""
    kept = []
    for attribute in pv_object["attribute"]:
        name = attribute["name"]
        if name == "ColorMode":
            continue
        try:
            value = attribute["value"][0]["value"]
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(value, int | float | str):
            kept.append((name, value, attribute["descriptor"]))
    return kept


class PtychoNNProcessor(AdImageProcessor):
    def __init__(self, configDict: dict | None = None):  # noqa: N803 - pvapy's names
        super().__init__(configDict or {})
        self.config = {**DEFAULTS, **(configDict or {})}
        # (request, error): the last configuration request answered, and why it was refused
        self.answer: tuple[int, str] = (0, "")
        self._config_lock = threading.Lock()
        self._last_image: np.ndarray | None = None  # a new model is tried on it first
        self._codecs_said: set[str] = set()  # codecs this install cannot decode, logged once
        reconstructor = self._reconstructor(self.config)  # a bad model at start is fatal
        self.outputs = OutputFrames()
        # A collector finds this instance's output channel only after its first frame
        # (pvapy creates the channel then): `firstDelay` holds the outputs meanwhile.
        self.batcher = Batcher(reconstructor, self._publish, int(self.config["batchSize"]),
                               float(self.config["maxWait"]), float(self.config["firstDelay"]))

    @staticmethod
    def _reconstructor(config: dict) -> Reconstructor:
        model, manifest = load_model(config["model"], Path(config["modelDir"]))
        backend = open_backend(config["backend"], config["precision"], model, manifest,
                               threads=int(config["threads"]))
        return Reconstructor(backend, manifest)

    # -- the framework's interface (pvapy's camelCase) -------------------------

    def process(self, pvObject):  # noqa: N803
        unique_id = pvObject["uniqueId"]
        if unique_id <= 0:
            # areaDetector counts frames from 1; a frame without an id would be taken for
            # a detector restart downstream (and every id since for missed)
            self.logger.warning("frame refused: uniqueId %s is not a frame count", unique_id)
            self.batcher.reject("unique_id")
            return None
        try:
            image = decode_frame(pvObject)
        except CodecUnavailable as error:
            # said once per codec, not for every frame; every frame is still counted
            if error.codec not in self._codecs_said:
                self._codecs_said.add(error.codec)
                self.logger.error("%s", error)
            self.batcher.reject(error.kind)
            return None
        except FrameError as error:
            self.logger.warning("frame %s refused: %s", unique_id, error)
            self.batcher.reject(error.kind)
            return None
        except Exception as error:  # a structure that is not an NTNDArray at all
            self.logger.warning("frame %s refused: %s", unique_id, error)
            self.batcher.reject("decode")
            return None
        self._last_image = image
        context = (pvObject["timeStamp"], pvObject["dataTimeStamp"], _frame_attributes(pvObject))
        self.batcher.submit(Frame(image, unique_id, context=context))
        return None

    def configure(self, configDict):  # noqa: N803
        change = dict(configDict or {})
        threading.Thread(target=self._apply, args=(change,), daemon=True).start()

    def stop(self):
        self.batcher.stop()

    def resetStats(self):
        self.batcher.reset_stats()

    def getStats(self):
        stats = self.batcher.stats()
        result = {name: stats[name] for name in (
            "published", "rate", "batchFill", "latencyP50", "latencyP99", "inferenceTime",
            "residualMean", "queued", "errors")}
        result.update({f"errors_{kind}": stats.get(f"errors_{kind}", 0) for kind in ERROR_KINDS})
        result.update(model=self.config["model"], backend=self.config["backend"],
                      precision=self.config["precision"], batchSize=self.batcher.batch_size,
                      answered=self.answer[0], configError=self.answer[1])
        return result

    def getStatsPvaTypes(self):
        types = {"published": pva.ULONG, "rate": pva.DOUBLE, "batchFill": pva.DOUBLE,
                 "latencyP50": pva.DOUBLE, "latencyP99": pva.DOUBLE,
                 "inferenceTime": pva.DOUBLE, "residualMean": pva.DOUBLE, "queued": pva.UINT,
                 "errors": pva.UINT, "model": pva.STRING, "backend": pva.STRING,
                 "precision": pva.STRING, "batchSize": pva.UINT, "answered": pva.UINT,
                 "configError": pva.STRING}
        types.update({f"errors_{kind}": pva.UINT for kind in ERROR_KINDS})
        return types

    def getOutputPvObjectType(self, pvObject):  # noqa: N803
        return pva.NtNdArray()

    # -- ours -------------------------------------------------------------------

    def _publish(self, result: Result) -> None:
        self.updateOutputChannel(self.outputs.fill(result, self.config["model"]))

    def _tried(self, reconstructor: Reconstructor, config: dict) -> Reconstructor:
        """`reconstructor`, once it reconstructed the latest frame: a model that does not fit
        the detector's frames is refused before it could lose one."""
        image = self._last_image
        if image is None:
            return reconstructor
        try:
            reconstructor([image])
        except Exception as error:
            ny, nx = image.shape
            raise ModelError(f"model {config['model']!r} does not fit the {nx}x{ny} frames: "
                             f"{error}") from error
        return reconstructor

    def _apply(self, change: dict) -> None:
        """Apply a configuration change; a bad one is refused and what runs stays. The
        answer names the change's `request` number, so no old refusal passes for it."""
        request = change.pop("request", 0)
        with self._config_lock:
            config = {**self.config, **change}
            try:
                fixed = sorted(set(change) - set(RUNTIME_KEYS))
                if fixed:
                    raise ValueError(f"{', '.join(fixed)} cannot be changed while running")
                batch_size, max_wait = int(config["batchSize"]), float(config["maxWait"])
                if not 1 <= batch_size <= 1024 or not 0 <= max_wait <= 10:
                    raise ValueError(f"batchSize {batch_size} or maxWait {max_wait} "
                                     "out of range")
                if any(config[k] != self.config[k] for k in ("model", "backend", "precision")):
                    self.batcher.swap(self._tried(self._reconstructor(config), config))
            except Exception as error:  # whatever fails, what runs stays
                self.answer = (request, str(error))
                self.logger.error("configuration %s refused: %s", change, error)
                return
            self.batcher.batch_size, self.batcher.max_wait = batch_size, max_wait
            self.config = config
            self.answer = (request, "")
            self.logger.info("configuration now %s", config)
