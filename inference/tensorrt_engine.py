"""TensorRT engines (fp16, int8) built from the ONNX export, run on torch CUDA tensors.

Only imported where `tensorrt` imports and a CUDA GPU exists (see backends.py).
The int8 engine is built from the int8 ONNX file, whose Q/DQ nodes carry the
scales calibrated on simulated frames, so no TensorRT calibrator is needed.
Engines are cached beside the ONNX files, per GPU model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from ptychoedge.inference.backends import BackendError
from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.model import PtychoNN
from ptychoedge.inference.onnx_export import exported

log = logging.getLogger(__name__)

MAX_BATCH = 256
OPTIMAL_BATCH = 16


def build_engine(onnx_path: Path, precision: str, input_size: int, engine_path: Path) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shape = (1, input_size, input_size)
    profile.set_shape(network.get_input(0).name, (1, *shape), (OPTIMAL_BATCH, *shape),
                      (MAX_BATCH, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build a {precision} engine")
    engine_path.write_bytes(bytes(serialized))


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, model: PtychoNN, manifest: Manifest, precision: str, cache_dir: Path):
        if precision not in ("fp16", "int8"):
            raise BackendError("tensorrt runs fp16 and int8 engines; for fp32 use torch")
        onnx_path = exported(model, manifest, "int8" if precision == "int8" else "fp32",
                             cache_dir)
        gpu = torch.cuda.get_device_name().replace(" ", "_")
        engine_path = onnx_path.with_name(f"{onnx_path.stem}-{precision}-{gpu}.engine")
        if not engine_path.exists():
            build_engine(onnx_path, precision, manifest.preprocessing.input_size, engine_path)
        self.precision = precision
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names
                               if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if n != self.input_name)
        self.stream = torch.cuda.Stream()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > MAX_BATCH:
            return np.concatenate([self.infer(batch[i:i + MAX_BATCH])
                                   for i in range(0, len(batch), MAX_BATCH)])
        inputs = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        outputs = torch.empty((len(batch), 2, *batch.shape[2:]), dtype=torch.float32,
                              device="cuda")
        self.context.set_input_shape(self.input_name, tuple(inputs.shape))
        self.context.set_tensor_address(self.input_name, inputs.data_ptr())
        self.context.set_tensor_address(self.output_name, outputs.data_ptr())
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return outputs.cpu().numpy()
