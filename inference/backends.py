"""Where the network runs: PyTorch, ONNX Runtime or TensorRT, behind one small interface.

`open_model(kind, precision, name)` gives an object whose `infer` takes a
(n, 1, s, s) float32 batch and returns (n, 2, s, s) float32 amplitude and phase.
What runs where:

| kind        | fp32         | fp16 | int8                          |
| ----------- | ------------ | ---- | ----------------------------- |
| torch       | CPU or CUDA  | CUDA | -                             |
| onnxruntime | CPU or CUDA  | -    | CPU or CUDA (QDQ, calibrated) |
| tensorrt    | -            | CUDA | CUDA (from the int8 QDQ ONNX) |

`threads` is the intra-op thread count of one instance: 1 by default, since
many instances run side by side; 0 leaves the runtime's default (every core).
For torch it is process-wide (`torch.set_num_threads`).

ONNX Runtime runs a bundle's exported graph (manifest.py) and needs no torch; the torch
backend, and TensorRT (which moves its buffers with torch's CUDA tensors), need the
`torch` extra. `open_backend` runs a network in hand: torch weights, or a graph file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ptychoedge.inference import onnx_export
from ptychoedge.inference.manifest import (
    MODEL_DIR,
    Manifest,
    bundled_graph,
    load_manifest,
    load_model,
)

if TYPE_CHECKING:
    from ptychoedge.inference.model import PtychoNN

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
SUPPORTED = {"torch": ("fp32", "fp16"), "onnxruntime": ("fp32", "int8"),
             "tensorrt": ("fp16", "int8")}
DEVICES = ("auto", "cpu", "cuda")
CACHE_DIR = onnx_export.default_cache_dir()
TENSORRT_MAX_BATCH = 256  # the engines' optimisation profile: batches 1..256, tuned for 16
TENSORRT_OPTIMAL_BATCH = 16
NEEDS_TORCH = "the `torch` extra (pip install 'ptychoedge[torch]')"


class BackendError(ValueError):
    """A backend that cannot run here, with what is missing."""


class Backend(Protocol):
    name: str
    precision: str
    device: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


def supported_combinations() -> str:
    return ", ".join(f"{kind} {'/'.join(precisions)}" for kind, precisions in SUPPORTED.items())


def _checked(batch: np.ndarray, size: int) -> np.ndarray:
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1:] != (1, size, size) or not len(batch):
        raise ValueError(f"expected a (n, 1, {size}, {size}) batch, got shape {batch.shape}")
    return batch


class TorchBackend:
    name = "torch"

    def __init__(self, model: PtychoNN, precision: str, device: str):
        import torch

        from ptychoedge.inference.model import PtychoNN

        self.torch = torch
        self.precision, self.device = precision, device
        self.size = model.shape.input_size
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        # A copy: the caller's model stays fp32 on the CPU, e.g. for an ONNX export.
        self.model = PtychoNN(model.shape).to(device, self.dtype).eval()
        self.model.load_state_dict(model.state_dict())

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = _checked(batch, self.size)
        with self.torch.inference_mode():
            x = self.torch.from_numpy(batch).to(self.device, self.dtype)
            return self.model(x).float().cpu().numpy()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, network: PtychoNN | Path, manifest: Manifest, precision: str,
                 device: str, threads: int, cache_dir: Path | None):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            elif device == "cuda":
                raise BackendError("onnxruntime on cuda needs the `onnxruntime-gpu` package "
                                   "(no CUDAExecutionProvider in this onnxruntime)")
        path = onnx_export.exported(network, manifest, precision, cache_dir)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # QDQ models warn about every node left in float
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.precision = precision
        self.device = "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"
        self.size = manifest.shape.input_size
        self.input_name = self.session.get_inputs()[0].name
        log.info("onnxruntime %s on %s from %s", precision, self.device, path.name)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _checked(batch, self.size)})[0]


class TensorRTBackend:
    """An engine built from the ONNX export and run on torch CUDA tensors.

    fp16 is built from the fp32 ONNX file; int8 from the symmetric int8 one, whose
    Q/DQ nodes carry the scales calibrated on simulated frames (explicit
    quantization: no TensorRT calibrator). Layers left in float run in fp16.
    Engines are cached beside the ONNX files, per TensorRT version and GPU model.
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(self, network: PtychoNN | Path, manifest: Manifest, precision: str,
                 cache_dir: Path | None):
        import tensorrt as trt
        import torch

        self.trt, self.torch, self.precision = trt, torch, precision
        self.size = manifest.shape.input_size
        onnx_path = onnx_export.exported(
            network, manifest, "int8-symmetric" if precision == "int8" else "fp32", cache_dir)
        gpu = "".join(c if c.isalnum() else "_" for c in torch.cuda.get_device_name())
        engine_path = onnx_path.with_name(
            f"{onnx_path.stem}-{precision}-trt{trt.__version__}-{gpu}.engine")
        logger = trt.Logger(trt.Logger.WARNING)
        if not engine_path.exists():
            engine_path.write_bytes(self._build(logger, onnx_path))
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT cannot load {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names
                               if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if n != self.input_name)
        self.stream = torch.cuda.Stream()

    def _build(self, logger, onnx_path: Path) -> bytes:
        trt = self.trt
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        if self.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        frame = (1, self.size, self.size)
        profile.set_shape(network.get_input(0).name, (1, *frame),
                          (TENSORRT_OPTIMAL_BATCH, *frame), (TENSORRT_MAX_BATCH, *frame))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT could not build a {self.precision} engine")
        log.info("built a TensorRT %s engine from %s", self.precision, onnx_path.name)
        return bytes(serialized)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        batch = _checked(batch, self.size)
        if len(batch) > TENSORRT_MAX_BATCH:
            return np.concatenate([self.infer(batch[i:i + TENSORRT_MAX_BATCH])
                                   for i in range(0, len(batch), TENSORRT_MAX_BATCH)])
        with torch.cuda.stream(self.stream):  # copies and the engine on one stream, in order
            inputs = torch.from_numpy(batch).cuda()
            outputs = torch.empty((len(batch), 2, self.size, self.size), device="cuda")
            self.context.set_input_shape(self.input_name, tuple(inputs.shape))
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            self.context.set_tensor_address(self.output_name, outputs.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT inference failed")
            result = outputs.cpu()
        self.stream.synchronize()
        return result.numpy()


def tensorrt_missing() -> str | None:
    """What the tensorrt backend lacks here, or None when it can run."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("tensorrt is not installed")
    try:
        import torch
    except ImportError:
        missing.append(f"torch is not installed ({NEEDS_TORCH})")
    else:
        if not torch.cuda.is_available():
            missing.append("no CUDA GPU is available")
    return " and ".join(missing) or None


def open_model(kind: str, precision: str, name: str, directory: Path = MODEL_DIR,
               **options) -> tuple[Backend, Manifest]:
    """Model `name` from `directory` ready on `kind` (see `open_backend` for `options`):
    the torch backend loads the weights; the others run the bundle's graph, without torch."""
    manifest = load_manifest(name, directory)
    graph = None if kind == "torch" else bundled_graph(manifest, directory)
    if graph is not None:
        return open_backend(kind, precision, graph, manifest, **options), manifest
    try:
        network, manifest = load_model(name, directory)
    except ImportError as error:
        why = "the torch backend" if kind == "torch" else f"model {name!r} (no bundled graph)"
        raise BackendError(f"{why} needs {NEEDS_TORCH}") from error
    return open_backend(kind, precision, network, manifest, **options), manifest


def open_backend(kind: str, precision: str, network: PtychoNN | Path, manifest: Manifest, *,
                 device: str = "auto", threads: int = 1,
                 cache_dir: Path | None = None) -> Backend:
    """A ready backend running `network`: torch weights, or its fp32 ONNX graph (not for the
    torch backend). `device` is auto, cpu or cuda; ONNX files and engines are cached in
    `cache_dir` (default $PTYCHOEDGE_CACHE or ~/.cache/ptychoedge)."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}: choose from {', '.join(BACKENDS)} "
                           f"(supported: {supported_combinations()})")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}"
                           f" (supported: {supported_combinations()})")
    if precision not in SUPPORTED[kind]:
        raise BackendError(f"{kind} does not run {precision}; supported: "
                           f"{supported_combinations()}")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}: choose from {', '.join(DEVICES)}")
    if threads < 0:
        raise BackendError(f"threads must be 0 (runtime default) or more, got {threads}")
    if kind == "torch":
        if isinstance(network, Path):
            raise BackendError("the torch backend runs torch weights, not an ONNX graph")
        try:
            import torch
        except ImportError as error:
            raise BackendError(f"the torch backend needs {NEEDS_TORCH}") from error
        cuda = torch.cuda.is_available()
        if device == "cuda" and not cuda:
            raise BackendError("torch on cuda needs a CUDA GPU, and torch sees none")
        resolved = ("cuda" if cuda else "cpu") if device == "auto" else device
        if precision == "fp16" and resolved != "cuda":
            why = "device is cpu" if cuda else "none is available"
            raise BackendError(f"torch fp16 needs a CUDA GPU, and {why}; on CPU use fp32 "
                               f"(supported: {supported_combinations()})")
        if threads > 0:
            torch.set_num_threads(threads)
        return TorchBackend(network, precision, resolved)
    if kind == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise BackendError("onnxruntime backend needs the `onnxruntime` package") from error
        return OnnxRuntimeBackend(network, manifest, precision, device, threads, cache_dir)
    missing = tensorrt_missing()
    if missing:
        raise BackendError(f"tensorrt backend needs the `tensorrt` package and an NVIDIA GPU: "
                           f"{missing}")
    if device == "cpu":
        raise BackendError("tensorrt runs on a CUDA GPU only, and device is cpu")
    return TensorRTBackend(network, manifest, precision, cache_dir)
