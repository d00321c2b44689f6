"""ONNX files of a model: fp32, and int8 by static quantization on simulated frames.

Files are cached under the weights' sha256, so each precision is built once.
The int8 model is calibrated on frames the simulator makes of a sample the
model is not scored on (seed 7), through the model's own preprocessing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.model import PtychoNN
from ptychoedge.sim import physics

log = logging.getLogger(__name__)

OPSET = 17
CALIBRATION_FRAMES = 64
CALIBRATION_SEED = 7


def exported(model: PtychoNN, manifest: Manifest, precision: str, cache_dir: Path) -> Path:
    """The ONNX file of `model` at `precision` ("fp32" or "int8"), built if not cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = manifest.sha256[:16] or "unsaved"
    fp32 = cache_dir / f"{manifest.name}-{key}-fp32.onnx"
    if not fp32.exists():
        export_fp32(model, manifest.preprocessing.input_size, fp32)
    if precision == "fp32":
        return fp32
    int8 = cache_dir / f"{manifest.name}-{key}-int8.onnx"
    if not int8.exists():
        quantize_int8(fp32, calibration_inputs(manifest), int8)
    return int8


def export_fp32(model: PtychoNN, input_size: int, path: Path) -> None:
    example = torch.zeros(1, 1, input_size, input_size)
    partial = path.with_suffix(".partial")
    torch.onnx.export(model.float().eval().cpu(), example, str(partial), opset_version=OPSET,
                      input_names=["diffraction"], output_names=["amplitude_phase"],
                      dynamic_axes={"diffraction": {0: "batch"}, "amplitude_phase": {0: "batch"}},
                      dynamo=False)
    partial.rename(path)  # no half-written file is ever taken from the cache
    log.info("exported %s", path)


def calibration_inputs(manifest: Manifest) -> np.ndarray:
    probe = physics.make_probe(**manifest.probe) if manifest.probe else None
    simulator = physics.PtychographySimulator(manifest.preprocessing.crop_size,
                                              photons=manifest.photons, seed=CALIBRATION_SEED,
                                              probe=probe)
    positions = physics.fermat_spiral_positions(CALIBRATION_FRAMES, 0.25e-6)
    return manifest.preprocessing.frames(simulator.frames(positions)[0])


def quantize_int8(fp32: Path, inputs: np.ndarray, path: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(inputs[i:i + 1] for i in range(len(inputs)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"diffraction": batch}

    prepared = path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    partial = path.with_suffix(".partial")
    quantize_static(str(prepared), str(partial), Frames(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    prepared.unlink()
    partial.rename(path)
    log.info("quantized %s", path)
