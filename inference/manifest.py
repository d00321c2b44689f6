"""Shipped models: weights beside a JSON manifest that says how to use them.

`<name>.pt` holds a PyTorch state dict (tensors only: loaded with
`weights_only=True`, never unpickling objects); `<name>.json` holds its sha256,
the model shape, the preprocessing, the physics it was trained on, the training
recipe and the validation metrics. A model loads only when the sha256 matches.

Names are plain file names in the model directory: no paths, and no link to a
file outside it. A model is known by its file name, whatever its manifest calls
it (that name would otherwise reach file names, e.g. of the ONNX cache). The
manifest must give the network the input size its preprocessing makes; it is
JSON, nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.sim.physics import make_probe

MODEL_DIR = Path(__file__).with_name("models")
DEFAULT_MODEL = "ptychonn-default"


class ModelError(ValueError):
    """A model that cannot be loaded, with the reason."""


@dataclass
class Manifest:
    name: str
    sha256: str
    shape: ModelShape
    preprocessing: Preprocessing
    object_pixel_size: float  # m, of the output patches
    probe: dict[str, float] = field(default_factory=dict)  # make_probe arguments
    photons: float = 1e6
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def probe_window(self) -> np.ndarray:
        """The probe over the output patch: the central input_size pixels, complex64.

        The binned diffraction sees only this part of the field (see preprocess.py).
        """
        size = self.preprocessing.input_size
        if not self.probe:
            return np.ones((size, size), np.complex64)
        probe = make_probe(**self.probe)
        top = (probe.shape[0] - size) // 2
        return probe[top:top + size, top:top + size].astype(np.complex64)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["shape"] = ModelShape(**data["shape"])
        data["preprocessing"] = Preprocessing(**data["preprocessing"])
        return cls(**data)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_paths(name: str, directory: Path = MODEL_DIR) -> tuple[Path, Path]:
    """The weights and manifest of model `name`, which must be a plain name in `directory`."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ModelError(f"model name {name!r} must be a plain name in {directory}")
    return directory / f"{name}.pt", directory / f"{name}.json"


def save_model(model: PtychoNN, manifest: Manifest, directory: Path = MODEL_DIR) -> Path:
    """Write weights and manifest; the manifest's sha256 is filled in here."""
    directory.mkdir(parents=True, exist_ok=True)
    weights, manifest_path = model_paths(manifest.name, directory)
    torch.save(model.state_dict(), weights)
    manifest.sha256 = sha256_of(weights)
    manifest_path.write_text(manifest.to_json() + "\n")
    return manifest_path


def _inside(path: Path, directory: Path) -> None:
    """Refuse a file that is a link to somewhere outside `directory`."""
    if path.resolve().parent != directory.resolve():
        raise ModelError(f"{path.name} leads outside the model directory {directory}")


def load_manifest(name: str, directory: Path = MODEL_DIR) -> Manifest:
    _, manifest_path = model_paths(name, directory)
    if not manifest_path.is_file():
        raise ModelError(f"no model {name!r} in {directory} (no {manifest_path.name})")
    _inside(manifest_path, directory)
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ModelError(f"{manifest_path.name}: not a valid manifest ({error})") from error
    if manifest.shape.input_size != manifest.preprocessing.input_size:
        raise ModelError(f"{manifest_path.name}: the network takes "
                         f"{manifest.shape.input_size} px, the preprocessing makes "
                         f"{manifest.preprocessing.input_size} px")
    manifest.name = name
    return manifest


def load_model(name: str, directory: Path = MODEL_DIR) -> tuple[PtychoNN, Manifest]:
    """The model `name` from `directory`, after checking its sha256 against its manifest."""
    manifest = load_manifest(name, directory)
    weights, _ = model_paths(name, directory)
    if not weights.is_file():
        raise ModelError(f"model {name!r}: no weights file {weights.name}")
    _inside(weights, directory)
    if sha256_of(weights) != manifest.sha256:
        raise ModelError(f"model {name!r}: {weights.name} does not match the sha256 "
                         "in its manifest")
    model = PtychoNN(manifest.shape)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # a corrupt file or a state of another shape
        raise ModelError(f"model {name!r}: cannot load {weights.name} ({error})") from error
    return model.eval(), manifest
