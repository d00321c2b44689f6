"""The same frames give the same reconstruction on every backend, within stated tolerances."""

import numpy as np
import pytest
import torch

from ptychoedge.inference.backends import BackendError, open_backend
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    load_model,
    save_model,
)
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.onnx_export import calibration_inputs
from ptychoedge.inference.preprocess import Preprocessing

PROBE = {"size": 128, "diameter_px": 64, "defocus": 6.0}
FP32_TOLERANCE = 1e-4  # absolute, amplitude and phase (rad)
INT8_AMPLITUDE_MAE = 0.02
INT8_PHASE_MAE = 0.05  # rad


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    torch.manual_seed(3)
    shape = ModelShape(64, 8)
    save_model(PtychoNN(shape), Manifest("random", "", shape, Preprocessing(), 1e-8,
                                         probe=PROBE), directory)
    return load_model("random", directory)


def models(random_model):
    yield "random", random_model
    if (MODEL_DIR / f"{DEFAULT_MODEL}.json").exists():
        yield DEFAULT_MODEL, load_model(DEFAULT_MODEL)


def test_onnxruntime_matches_torch(random_model, tmp_path):
    for name, (model, manifest) in models(random_model):
        inputs = calibration_inputs(manifest)[:7]  # simulated frames, odd batch
        reference = open_backend("torch", "fp32", model, manifest).infer(inputs)
        onnx = open_backend("onnxruntime", "fp32", model, manifest, cache_dir=tmp_path)
        np.testing.assert_allclose(onnx.infer(inputs), reference, atol=FP32_TOLERANCE,
                                   err_msg=name)
        assert onnx.infer(inputs[:1]).shape == (1, 2, 64, 64)  # the batch axis is dynamic


def test_int8_stays_close_to_fp32(random_model, tmp_path):
    for name, (model, manifest) in models(random_model):
        inputs = calibration_inputs(manifest)[:16]
        reference = open_backend("torch", "fp32", model, manifest).infer(inputs)
        int8 = open_backend("onnxruntime", "int8", model, manifest,
                            cache_dir=tmp_path).infer(inputs)
        assert np.abs(int8[:, 0] - reference[:, 0]).mean() < INT8_AMPLITUDE_MAE, name
        assert np.abs(int8[:, 1] - reference[:, 1]).mean() < INT8_PHASE_MAE, name
        assert not np.array_equal(int8, reference)  # it really is another computation


def test_tensorrt_says_what_is_missing(random_model):
    model, manifest = random_model
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the TensorRT path is tested by the benchmark there")
    with pytest.raises(BackendError, match="tensorrt.*(not installed|no CUDA GPU)"):
        open_backend("tensorrt", "fp16", model, manifest)


@pytest.mark.parametrize("kind, precision, reason", [
    ("tflite", "fp32", "unknown backend"), ("torch", "fp8", "unknown precision"),
    ("torch", "int8", "onnxruntime or tensorrt"), ("onnxruntime", "fp16", "fp16"),
])
def test_unsupported_combinations(random_model, kind, precision, reason):
    model, manifest = random_model
    if kind == "torch" and precision == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 runs on this GPU")
    with pytest.raises(BackendError, match=reason):
        open_backend(kind, precision, model, manifest)
