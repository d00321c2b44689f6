r"""The PtychoNN processor that `pvapy-hpc-consumer` runs, one per inference instance.

    pvapy-hpc-consumer --input-channel SIM1:Pva1:Image --output-channel EDGE1:recon:1 \
        --processor-class ptychoedge.inference.processor.PtychoNNProcessor \
        --processor-args '{"model": "ptychonn-default", "backend": "onnxruntime", "batchSize": 8}'

For every frame it publishes an NTNDArray of shape [x, y, 2] (amplitude, then
phase, float32) with the frame's `uniqueId`, both time stamps, the frame's
attributes (the scan position among them) and three more: `Latency` (s, receipt
to publication), `Residual` (the diffraction residual, see quality.py) and
`Model`. `configure` (the framework's control channel) changes the model, the
backend, the precision or the batch while frames keep flowing. Its arguments
and status fields are those of pvdb/processors.py.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pvaccess as pva
from pvapy.hpc.adImageProcessor import AdImageProcessor

from ptychoedge.inference.backends import open_model
from ptychoedge.inference.batcher import Batcher, Frame, Reconstructor, Result
from ptychoedge.inference.frames import CodecUnavailable, decode_frame
from ptychoedge.inference.manifest import MODEL_DIR, ModelError
from ptychoedge.inference.preprocess import FrameError
from ptychoedge.pvdb.processors import (
    REQUEST,
    RUNTIME_ARGS,
    InstanceArgs,
    InstanceCounts,
    InstanceStatus,
    ModelConfig,
    wire_name,
)

log = logging.getLogger(__name__)

MAX_WAIT = 10.0  # s, the longest a batch may be told to wait to fill


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
        """The output of `result`, made by `model`."""
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
    """Reconstructs every frame of its instance's share, in batches, and publishes each patch.

    pvapy calls the camelCase methods; their arguments and the status they report
    are `InstanceArgs` and `InstanceStatus` of pvdb/processors.py.
    """

    def __init__(self, configDict: dict | None = None):  # noqa: N803 - pvapy's names
        """Load the model that `configDict` (`InstanceArgs` by wire names) asks for.

        Raises:
            ValueError: the configuration is outside its knobs' limits, or the model or
                backend cannot be had; the instance then does not start.
        """
        super().__init__(configDict or {})
        self.args = InstanceArgs.from_args(configDict or {})
        if problem := self.args.config.problem():
            raise ValueError(problem)
        # (request, error): the last configuration request answered, and why it was refused
        self.answer: tuple[int, str] = (0, "")
        self._config_lock = threading.Lock()
        self._last_image: np.ndarray | None = None  # a new model is tried on it first
        self._codecs_said: set[str] = set()  # codecs this install cannot decode, logged once
        reconstructor = self._reconstructor(self.args.config)  # a bad model at start is fatal
        self.outputs = OutputFrames()
        # A collector finds this instance's output channel only after its first frame
        # (pvapy creates the channel then): `firstDelay` holds the outputs meanwhile.
        self.batcher = Batcher(reconstructor, self._publish, self.args.config.batch_size,
                               float(self.args.max_wait), float(self.args.first_delay))

    def _reconstructor(self, config: ModelConfig) -> Reconstructor:
        backend, manifest = open_model(config.backend, config.precision, config.model,
                                       Path(self.args.model_dir or MODEL_DIR),
                                       threads=int(self.args.threads))
        return Reconstructor(backend, manifest)

    # -- the framework's interface (pvapy's camelCase) -------------------------

    def process(self, pvObject):  # noqa: N803
        """Take one frame: refused and counted by kind if malformed, else queued."""
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
        except (pva.PvaException, LookupError, TypeError) as error:  # not an NTNDArray at all
            self.logger.warning("frame %s refused: %s", unique_id, error)
            self.batcher.reject("decode")
            return None
        self._last_image = image
        context = (pvObject["timeStamp"], pvObject["dataTimeStamp"], _frame_attributes(pvObject))
        self.batcher.submit(Frame(image, unique_id, context=context))
        return None

    def configure(self, configDict):  # noqa: N803
        """Apply a configuration change in the background; `getStats` answers it.

        The change is `RUNTIME_ARGS` by wire names, numbered by `request`.
        """
        change = dict(configDict or {})
        threading.Thread(target=self._apply, args=(change,), daemon=True).start()

    def stop(self):
        """Finish and publish the frames queued, then stop."""
        self.batcher.stop()

    def resetStats(self):
        """Zero the figures `getStats` reports."""
        self.batcher.reset_stats()

    def getStats(self):
        """The `InstanceStatus` as a flat dict by wire names."""
        stats = self.batcher.stats()
        return InstanceStatus(
            counts=InstanceCounts.from_stats(stats),
            errors_by_kind={kind.removeprefix("errors_"): count for kind, count
                            in stats.items() if kind.startswith("errors_")},
            config=replace(self.args.config, batch_size=self.batcher.batch_size),
            answered=self.answer[0], config_error=self.answer[1]).to_stats()

    def getStatsPvaTypes(self):
        """The pvaccess type of each field `getStats` reports."""
        return {name: getattr(pva, kind) for name, kind in InstanceStatus.pva_types().items()}

    def getOutputPvObjectType(self, pvObject):  # noqa: N803
        """What the output channel publishes: NTNDArrays."""
        return pva.NtNdArray()

    # -- ours -------------------------------------------------------------------

    def _publish(self, result: Result) -> None:
        self.updateOutputChannel(self.outputs.fill(result, self.args.config.model))

    def _tried(self, reconstructor: Reconstructor, config: ModelConfig) -> Reconstructor:
        """`reconstructor`, once it reconstructed the latest frame.

        A model that does not fit the detector's frames is refused before it could lose one.
        """
        image = self._last_image
        if image is None:
            return reconstructor
        try:
            reconstructor([image])
        except Exception as error:  # whatever a backend raises on a misfit, it is refused
            ny, nx = image.shape
            raise ModelError(f"model {config.model!r} does not fit the {nx}x{ny} frames: "
                             f"{error}") from error
        return reconstructor

    def _changed(self, change: dict) -> InstanceArgs:
        """The arguments with `change` applied; ValueError if it cannot be."""
        fixed = sorted(set(change) - set(RUNTIME_ARGS))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be changed while running")
        config = ModelConfig.from_args({**self.args.config.to_args(), **change})
        if problem := config.problem():
            raise ValueError(problem)
        max_wait = change.get(wire_name("max_wait"), self.args.max_wait)
        if not isinstance(max_wait, int | float) or not 0 <= max_wait <= MAX_WAIT:
            raise ValueError(f"maxWait {max_wait} out of range 0..{MAX_WAIT}")
        return replace(self.args, config=config, max_wait=float(max_wait))

    def _apply(self, change: dict) -> None:
        """Apply a configuration change; a bad one is refused and what runs stays.

        The answer names the change's `request` number, so no old refusal passes for it.
        """
        request = change.pop(REQUEST, 0)
        with self._config_lock:
            try:
                args = self._changed(change)
                running = self.args.config
                if replace(args.config, batch_size=running.batch_size) != running:
                    self.batcher.swap(self._tried(self._reconstructor(args.config),
                                                  args.config))
            except Exception as error:  # a model or backend failing any way: what runs stays
                self.answer = (request, str(error))
                self.logger.error("configuration %s refused: %s", change, error)
                return
            self.batcher.batch_size = args.config.batch_size
            self.batcher.max_wait = args.max_wait
            self.args = args
            self.answer = (request, "")
            self.logger.info("configuration now %s", args)
