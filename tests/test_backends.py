"""The same frames give the same reconstruction on every backend, within stated tolerances.

Inputs are preprocessed simulated frames of the sample of seed 0 (the int8
calibration uses seed 7). Measured on the shipped model (width 16): onnxruntime
fp32 differs from torch by < 1e-6; int8 by a mean 0.003 in amplitude and
0.006 rad in phase, so the bars below leave about 7x room.
"""

import numpy as np
import onnx
import pytest
import torch

from ptychoedge.inference import onnx_export
from ptychoedge.inference.backends import (
    BACKENDS,
    PRECISIONS,
    SUPPORTED,
    BackendError,
    open_backend,
    tensorrt_missing,
)
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    load_model,
    save_model,
)
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.sim import physics

INSTRUMENT = physics.default_instrument()
FP32_ATOL = 1e-4  # absolute, amplitude and phase (rad), any element
INT8_AMPLITUDE_MAE = 0.02  # mean absolute difference from fp32
INT8_PHASE_MAE = 0.05  # rad
FP16_ATOL = 1e-2  # GPU only
SHIPPED = (MODEL_DIR / f"{DEFAULT_MODEL}.json").exists()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    torch.manual_seed(3)
    shape = ModelShape(64, 8)
    save_model(PtychoNN(shape), Manifest.for_instrument(
        "random", shape, Preprocessing(128, 64), INSTRUMENT), directory)
    return load_model("random", directory)


@pytest.fixture(scope="module")
def folded_model(tmp_path_factory):
    """A network that sees a whole 128-pixel frame folded into 64-pixel channels."""
    directory = tmp_path_factory.mktemp("models")
    torch.manual_seed(4)
    shape = ModelShape(128, 8, fold=2)
    save_model(PtychoNN(shape), Manifest.for_instrument(
        "folded", shape, Preprocessing(128, 128), INSTRUMENT), directory)
    return load_model("folded", directory)


@pytest.fixture(scope="module", params=["random", "folded", "shipped"])
def model(request, random_model, folded_model):
    if request.param == "random":
        return random_model
    if request.param == "folded":
        return folded_model
    if not SHIPPED:
        pytest.skip(f"no shipped {DEFAULT_MODEL} model yet")
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def frames(manifest, count=16):
    return onnx_export.simulated_inputs(manifest, count, seed=0)


def test_onnxruntime_fp32_matches_torch(model, cache):
    model, manifest = model
    inputs = frames(manifest, 7)
    reference = open_backend("torch", "fp32", model, manifest, device="cpu").infer(inputs)
    onnx_fp32 = open_backend("onnxruntime", "fp32", model, manifest, device="cpu",
                             cache_dir=cache)
    np.testing.assert_allclose(onnx_fp32.infer(inputs), reference, atol=FP32_ATOL, rtol=0)
    np.testing.assert_allclose(onnx_fp32.infer(inputs[3:4]), reference[3:4], atol=FP32_ATOL,
                               rtol=0)


@pytest.mark.slow
def test_int8_stays_close_to_fp32(model, cache):
    model, manifest = model
    inputs = frames(manifest)
    reference = open_backend("torch", "fp32", model, manifest, device="cpu").infer(inputs)
    int8 = open_backend("onnxruntime", "int8", model, manifest, device="cpu",
                        cache_dir=cache).infer(inputs)
    error = np.abs(int8 - reference).mean(axis=(0, 2, 3))
    assert error[0] < INT8_AMPLITUDE_MAE and error[1] < INT8_PHASE_MAE, error
    assert not np.array_equal(int8, reference)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["int8", "int8-symmetric"])
def test_int8_files_are_quantized(random_model, cache, flavour):
    path = onnx_export.exported(*random_model, flavour, cache)
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) >= 10
    zero_points = [init for init in graph.initializer if init.name.endswith("zero_point")]
    types = {onnx.helper.tensor_dtype_to_np_dtype(init.data_type) for init in zero_points}
    assert np.dtype(np.int8) in types
    if flavour == "int8-symmetric":  # what TensorRT accepts: int8, zero point 0
        assert types == {np.dtype(np.int8)}
        assert all(not onnx.numpy_helper.to_array(init).any() for init in zero_points)
    weights = [onnx.numpy_helper.to_array(init) for init in graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and init.dims and len(init.dims) == 4]
    assert weights
    largest = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
    if flavour == "int8":  # 7 bits: no int16 pair sum can saturate on CPUs without VNNI
        assert largest <= 64
    else:  # TensorRT adds in int32: the full 8 bits
        assert largest > 64


@pytest.mark.parametrize("kind, precision", [("torch", "fp32"), ("onnxruntime", "fp32"),
                                             ("onnxruntime", "int8")])
def test_batch_axis_is_dynamic(random_model, cache, kind, precision):
    model, manifest = random_model
    backend = open_backend(kind, precision, model, manifest, device="cpu", cache_dir=cache)
    assert (backend.name, backend.precision, backend.device) == (kind, precision, "cpu")
    inputs = frames(manifest, 7)
    for batch in (inputs[:1], inputs):
        output = backend.infer(batch)
        assert output.shape == (len(batch), 2, 64, 64) and output.dtype == np.float32
        assert np.all((output[:, 0] >= 0) & (output[:, 0] <= 1))
        assert np.all(np.abs(output[:, 1]) <= np.pi)
    with pytest.raises(ValueError, match=r"\(n, 1, 64, 64\)"):
        backend.infer(inputs[:, 0])


@pytest.mark.slow
def test_exports_are_cached_by_weights_and_precision(random_model, tmp_path):
    model, manifest = random_model
    first = onnx_export.exported(model, manifest, "fp32", tmp_path)
    built = first.stat().st_mtime_ns
    assert onnx_export.exported(model, manifest, "fp32", tmp_path) == first
    assert first.stat().st_mtime_ns == built  # not rebuilt
    assert onnx_export.exported(model, manifest, "int8", tmp_path) != first
    other = PtychoNN(model.shape)
    assert onnx_export.exported(other, manifest, "fp32", tmp_path) != first
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_nothing_is_written_into_the_package(random_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PTYCHOEDGE_CACHE", str(tmp_path / "env-cache"))
    before = sorted(MODEL_DIR.iterdir())
    path = onnx_export.exported(*random_model, "fp32")
    assert path.parent == tmp_path / "env-cache"
    assert sorted(MODEL_DIR.iterdir()) == before


def test_every_backend_says_which_known_precisions_it_runs():
    """open_backend looks a backend's precisions up in SUPPORTED (the knobs' choices are
    checked against BACKENDS and PRECISIONS in tests/test_knobs.py)."""
    assert set(SUPPORTED) == set(BACKENDS)
    for kind, precisions in SUPPORTED.items():
        assert precisions and set(precisions) <= set(PRECISIONS), kind


@pytest.mark.parametrize("kind, precision, reason", [
    ("tflite", "fp32", "unknown backend 'tflite'"),
    ("torch", "fp8", "unknown precision 'fp8'"),
    ("torch", "int8", "torch does not run int8"),
    ("onnxruntime", "fp16", "onnxruntime does not run fp16"),
    ("tensorrt", "fp32", "tensorrt does not run fp32"),
])
def test_unsupported_combinations_list_the_supported_ones(random_model, kind, precision,
                                                          reason):
    with pytest.raises(BackendError, match=reason) as raised:
        open_backend(kind, precision, *random_model)
    assert "onnxruntime fp32/int8" in str(raised.value)


def test_torch_fp16_needs_a_gpu(random_model):
    with pytest.raises(BackendError, match="torch fp16 needs a CUDA GPU"):
        open_backend("torch", "fp16", *random_model, device="cpu")


def test_tensorrt_says_what_is_missing(random_model):
    if tensorrt_missing() is None:
        pytest.skip("tensorrt and a GPU are present")
    with pytest.raises(BackendError, match="needs the `tensorrt` package and an NVIDIA GPU: "
                       "(tensorrt is not installed|no CUDA GPU)"):
        open_backend("tensorrt", "fp16", *random_model)


@needs_cuda
def test_torch_fp16_on_cuda(model):
    model, manifest = model
    inputs = frames(manifest, 7)
    reference = open_backend("torch", "fp32", model, manifest, device="cpu").infer(inputs)
    fp16 = open_backend("torch", "fp16", model, manifest, device="cuda")
    assert fp16.device == "cuda"
    np.testing.assert_allclose(fp16.infer(inputs), reference, atol=FP16_ATOL, rtol=0)


@pytest.mark.skipif(tensorrt_missing() is not None, reason=f"tensorrt: {tensorrt_missing()}")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_matches_torch(model, cache, precision):
    model, manifest = model
    inputs = frames(manifest)
    reference = open_backend("torch", "fp32", model, manifest, device="cpu").infer(inputs)
    engine = open_backend("tensorrt", precision, model, manifest, cache_dir=cache)
    for batch in (1, 7, 16):
        error = np.abs(engine.infer(inputs[:batch]) - reference[:batch]).mean(axis=(0, 2, 3))
        assert error[0] < INT8_AMPLITUDE_MAE and error[1] < INT8_PHASE_MAE, (batch, error)
