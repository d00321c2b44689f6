"""ONNX files of a model: fp32, and int8 by static quantization on simulated frames.

A network comes as torch weights or as its fp32 graph (a bundle's `.onnx` file, see
manifest.py); from a graph, nothing here needs torch. Files are cached in a cache
directory (never the package) under a key made of the network's sha256 (of its
weights, or of its graph) and the precision, so each is built once per model. The
int8 files are calibrated on frames the simulator makes of a Fermat scan over a
sample the model is not scored on (seed 7), through the model's own
preprocessing. Two int8 flavours exist: "int8" (unsigned activations and weights
in 7 bits, fastest on x86 CPUs and exact on those without VNNI) and "int8-symmetric"
(signed, zero point 0, what TensorRT accepts).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ptychoedge.inference.manifest import Manifest, sha256_of

if TYPE_CHECKING:
    from ptychoedge.inference.model import PtychoNN

log = logging.getLogger(__name__)

OPSET = 17
FLAVOURS = ("fp32", "int8", "int8-symmetric")
CALIBRATION_FRAMES = 64
CALIBRATION_SEED = 7  # not 0, the sample the benchmarks and tests score on
SCAN_STEP = 0.25e-6  # m, about 60% probe overlap with the default simulator
INPUT_NAME, OUTPUT_NAME = "diffraction", "amplitude_phase"


def default_cache_dir() -> Path:
    return Path(os.environ.get("PTYCHOEDGE_CACHE", Path.home() / ".cache" / "ptychoedge"))


def weights_sha256(model: PtychoNN) -> str:
    """sha256 of the weights themselves (names, shapes, values), whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def network_sha256(network: PtychoNN | Path) -> str:
    """sha256 of torch weights, or of an fp32 graph file."""
    return sha256_of(network) if isinstance(network, Path) else weights_sha256(network)


def cache_key(network: PtychoNN | Path, manifest: Manifest, flavour: str) -> str:
    recipe = {"opset": OPSET, "shape": manifest.shape.as_dict()}
    if flavour != "fp32":  # the calibration frames depend on the physics and preprocessing
        recipe |= {"preprocessing": manifest.preprocessing.as_dict(),
                   "probe": manifest.sha256.get("probe"), "photons": manifest.instrument.photons,
                   "seed": CALIBRATION_SEED, "frames": CALIBRATION_FRAMES}
    if flavour == "int8":  # 7-bit weights (see quantize_int8): files made before are rebuilt
        recipe["weights"] = "reduce_range"
    digest = hashlib.sha256(network_sha256(network).encode())
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def exported(network: PtychoNN | Path, manifest: Manifest, flavour: str,
             cache_dir: Path | None = None) -> Path:
    """The ONNX file of `network` (torch weights, or its fp32 graph) in `flavour` (see
    FLAVOURS), built unless already cached."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown ONNX flavour {flavour!r}: choose from {', '.join(FLAVOURS)}")
    if isinstance(network, Path) and flavour == "fp32":
        return network
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{manifest.name}-{cache_key(network, manifest, flavour)}-{flavour}.onnx"
    if path.exists():
        return path
    # Many instances may start at once: one builds, the others wait and reuse its file.
    with _locked(path.with_suffix(".lock")):
        if path.exists():
            return path
        if flavour == "fp32":
            _write_atomically(path, lambda tmp: export_fp32(network, manifest.shape.input_size,
                                                            tmp))
        else:
            fp32 = exported(network, manifest, "fp32", cache_dir)
            inputs = calibration_inputs(manifest)
            _write_atomically(path, lambda tmp: quantize_int8(
                fp32, inputs, tmp, symmetric=flavour == "int8-symmetric"))
        log.info("built %s", path)
    return path


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary name, so no half-written file is ever taken from the cache."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".onnx")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_fp32(model: PtychoNN, input_size: int, path: Path) -> None:
    """Export with a dynamic batch axis; a copy is exported, so `model` is left as it was."""
    import onnx
    import torch

    exportable = copy.deepcopy(model).float().eval().cpu()
    example = torch.zeros(1, 1, input_size, input_size)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not broken
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(exportable, (example,), str(path), opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          dynamo=False)
    onnx.checker.check_model(str(path))


def simulated_inputs(manifest: Manifest, points: int, seed: int) -> np.ndarray:
    """Preprocessed frames (points, 1, s, s) of a Fermat scan over the sample of `seed`."""
    from ptychoedge.sim import physics  # only to build int8 files: inference runs without it

    simulator = physics.simulator_for(manifest.instrument, seed=seed)
    frames, _ = simulator.frames(physics.fermat_spiral_positions(points, SCAN_STEP))
    return manifest.preprocessing.canonical(manifest.instrument.window).frames(frames)


def calibration_inputs(manifest: Manifest) -> np.ndarray:
    return simulated_inputs(manifest, CALIBRATION_FRAMES, CALIBRATION_SEED)


def quantize_int8(fp32: Path, inputs: np.ndarray, path: Path, *, symmetric: bool = False) -> None:
    """Static QDQ quantization: int8 weights per output channel, activation ranges from `inputs`.

    Activations are uint8 (asymmetric: ReLU outputs use the whole range), or int8
    with zero point 0 and float biases where `symmetric`, as TensorRT requires.

    The uint8 flavour keeps its weights in -64..64 (`reduce_range`): x86 CPUs without
    VNNI (AVX2, AVX-512 before VNNI) multiply uint8 by int8 with VPMADDUBSW, which adds
    two products into a saturating int16. With full-range weights, two bright pixels
    (up to 255) under two large weights (127) overflow it and wreck the first
    convolution (shipped model: int8 off fp32 by 0.33 amplitude); 2 x 255 x 64 cannot.
    VNNI CPUs and TensorRT accumulate in int32, so the symmetric flavour keeps 8 bits.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = (inputs[i:i + 8] for i in range(0, len(inputs), 8))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = path.with_name(path.stem + "-prepared.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared), str(path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=not symmetric,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           # TensorRT dequantizes int8 only: biases stay float, it fuses them
                           "QuantizeBias": not symmetric})
    finally:
        prepared.unlink(missing_ok=True)
