"""Where the network runs: PyTorch, ONNX Runtime or TensorRT, behind one small interface.

`open_backend(kind, precision, model, manifest)` gives an object whose `infer`
takes a (n, 1, s, s) float32 batch and returns (n, 2, s, s) amplitude and phase.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.model import PtychoNN

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
CACHE_DIR = Path(os.environ.get("PTYCHOEDGE_CACHE", Path.home() / ".cache" / "ptychoedge"))


class BackendError(ValueError):
    """A backend that cannot run here, with what is missing."""


class Backend(Protocol):
    name: str
    precision: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    name = "torch"

    def __init__(self, model: PtychoNN, precision: str, device: str):
        if precision == "int8":
            raise BackendError("torch runs fp32 (CPU or CUDA) and fp16 (CUDA); for int8 use "
                               "onnxruntime or tensorrt")
        if precision == "fp16" and device != "cuda":
            raise BackendError("torch fp16 needs a CUDA GPU, and none is available")
        self.precision = precision
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.to(self.device, self.dtype).eval()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
            return self.model(x).float().cpu().numpy()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model: PtychoNN, manifest: Manifest, precision: str, device: str,
                 threads: int, cache_dir: Path):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendError("onnxruntime backend needs the `onnxruntime` package") from error
        from ptychoedge.inference import onnx_export

        if precision == "fp16":
            raise BackendError("onnxruntime runs fp32 and int8 here; fp16 is for tensorrt")
        path = onnx_export.exported(model, manifest, precision, cache_dir)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                     else ["CPUExecutionProvider"])
        self.precision = precision
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]


def _tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the `tensorrt` package is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def open_backend(kind: str, precision: str, model: PtychoNN, manifest: Manifest, *,
                 device: str = "auto", threads: int = 1,
                 cache_dir: Path | None = None) -> Backend:
    """A ready backend; `threads` 0 lets the runtime use every core."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}: choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}: choose from "
                           f"{', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "torch":
        if threads > 0:
            torch.set_num_threads(threads)
        return TorchBackend(model, precision, device)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model, manifest, precision, device, threads,
                                  cache_dir or CACHE_DIR)
    missing = _tensorrt_missing()
    if missing:
        raise BackendError(f"tensorrt backend needs the `tensorrt` package and an NVIDIA GPU: "
                           f"{missing}")
    from ptychoedge.inference.tensorrt_engine import TensorRTBackend

    return TensorRTBackend(model, manifest, precision, cache_dir or CACHE_DIR)
