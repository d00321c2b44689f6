"""The wheel as a user installs it: the shipped model inside, a reconstruction from it
without torch (the runtime install has none: inference runs the bundle's ONNX graph)."""

from __future__ import annotations

import configparser
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # every test here starts processes

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "inference" / "models"


def package_dirs() -> list[str]:
    """The folders setup.cfg maps into the `ptychoedge` namespace."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["package_dir"].strip().splitlines()
    return [line.split("=")[1].strip() for line in lines]


def run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_carries_the_model_and_reconstructs_from_it(tmp_path):
    # built from a copy: a build in the repository leaves build/ and egg-info there
    source = tmp_path / "source"
    for folder in package_dirs():
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", tmp_path / "dist", source, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("ptychoedge-*.whl"))
    packed = set(zipfile.ZipFile(wheel).namelist())
    bundle = {f"ptychoedge/inference/models/{path.name}" for path in MODELS.iterdir()
              if path.is_file()}
    assert bundle and bundle <= packed, bundle - packed

    # a fresh environment that borrows the installed dependencies, not ptychoedge
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv,
        cwd=tmp_path)
    python = venv / "bin" / "python"
    # this interpreter's packages too, when it is itself a venv's (as paths only: the
    # editable install's hook there is not run)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    installed = run(python, "-c", "import ptychoedge.inference as p; print(p.__file__)",
                    cwd=tmp_path)
    assert installed.startswith(str(venv)), installed

    # a short simulated scan reconstructed with the default model, scored against the truth,
    # with torch made unimportable, as in an install without the torch extra
    report = run(python, "-c", WITHOUT_TORCH + "sys.exit(main())", "evaluate", "--backends",
                 "onnxruntime:fp32", "onnxruntime:int8", "--points", "16", "--out", "evaluation",
                 cwd=tmp_path)
    assert "onnxruntime:fp32: patch SSIM" in report, report
    assert "onnxruntime:int8: patch SSIM" in report, report
    assert (tmp_path / "evaluation" / "report.json").is_file()


WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; "
                 "from ptychoedge.iocs.cli import main; ")


def test_the_runtime_needs_no_torch(tmp_path):
    """What an inference node runs: the processors, the IOC, the simulator, a model on ONNX
    Runtime; the torch backend says which extra it needs."""
    script = WITHOUT_TORCH + """
import numpy as np
import ptychoedge.inference.processor, ptychoedge.inference.mosaic_processor
import ptychoedge.iocs.pipeline_ioc, ptychoedge.apps.beamline
from ptychoedge.inference.backends import BackendError, open_model
backend, manifest = open_model("onnxruntime", "fp32", "ptychonn-default")
size = manifest.shape.input_size
print(backend.infer(np.ones((2, 1, size, size), np.float32)).shape)
try:
    open_model("torch", "fp32", "ptychonn-default")
except BackendError as error:
    print(error)
"""
    said = run(sys.executable, "-c", script, cwd=tmp_path)
    assert "(2, 2, 64, 64)" in said, said
    assert "ptychoedge[torch]" in said, said


def test_training_without_torch_says_which_extra_to_install(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + "sys.exit(main())", "train",
                           "--epochs", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'ptychoedge[torch]'" in done.stderr
    assert "Traceback" not in done.stderr
