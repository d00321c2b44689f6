"""Model bundles: weights, the exported graph, the probe, and a JSON manifest.

A bundle in the model directory is four or five files:

- `<name>.pt`: a PyTorch state dict (tensors only: loaded with `weights_only=True`,
  never unpickling objects), for training and the torch backend;
- `<name>.onnx`: the same network exported as an fp32 ONNX graph, which ONNX Runtime and
  TensorRT run: inference needs no torch (bundles made before it existed have none;
  their graph is exported from the weights, which needs torch);
- `<name>.probe.npy`: the instrument's probe, (modes, n, n) complex64 at the object
  pixel of an n-pixel detector window (see instrument.py); the probe over the network's
  field, which stitching and the diffraction residual use, follows from it and the
  preprocessing (see preprocess.py);
- `<name>.mask.npy`, where the instrument has one: the detector's mask, (ny, nx) bool,
  frames as they arrive, True for a pixel that measures nothing;
- `<name>.json`: the sha256 of the other files, the network's shape, the preprocessing
  (crop, binning, detector orientation), the instrument's geometry and flux, the
  training recipe and lineage, and the validation figures (the residual's distribution
  among them). A file is used only when its sha256 matches.

Names are plain file names in the model directory: no paths, and no link to a file
outside it. A model is known by its file name, whatever its manifest calls it. The
manifest is JSON; nothing in it is executed. torch is imported only to read or write
the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptychoedge.inference.instrument import Geometry, Instrument, checked_probe
from ptychoedge.inference.model_shape import ModelShape
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.pvdb.processors import FALLBACK_RESIDUAL_LIMITS

if TYPE_CHECKING:
    from ptychoedge.inference.model import PtychoNN

MODEL_DIR = Path(__file__).with_name("models")
DEFAULT_MODEL = "ptychonn-default"


class ModelError(ValueError):
    """A model that cannot be loaded or saved, with the reason."""


@dataclass
class Manifest:
    name: str
    shape: ModelShape
    preprocessing: Preprocessing  # its orientation and mask are the instrument's
    instrument: Instrument
    sha256: dict[str, str] = field(default_factory=dict)  # file kind -> digest
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preprocessing.orientation != self.instrument.orientation:
            raise ValueError("the preprocessing must orient frames as the instrument says")
        if self.preprocessing.mask is not self.instrument.mask:
            self.preprocessing = dataclasses.replace(self.preprocessing,
                                                     mask=self.instrument.mask)
        if self.shape.input_size != self.preprocessing.input_size:
            raise ValueError(f"the network takes {self.shape.input_size} px, the "
                             f"preprocessing makes {self.preprocessing.input_size} px")

    @classmethod
    def for_instrument(cls, name: str, shape: ModelShape, preprocessing: Preprocessing,
                       instrument: Instrument, **extra: Any) -> Manifest:
        """A manifest for a network of `shape` that sees `instrument` through `preprocessing`
        (whose orientation is taken from the instrument)."""
        preprocessing = Preprocessing(preprocessing.crop_size, preprocessing.input_size,
                                      preprocessing.scale, instrument.orientation)
        return cls(name, shape, preprocessing, instrument, **extra)

    @cached_property
    def probe(self) -> np.ndarray:
        """(modes, n, n) complex64: the probe over the network's output field."""
        return self.instrument.model_probe(self.preprocessing.crop_size,
                                           self.preprocessing.binning)

    @property
    def object_pixel_size(self) -> float:
        """m per pixel of the output patches."""
        return self.instrument.geometry.object_pixel_size(self.preprocessing.crop_size)

    @property
    def phase_up_to_a_constant(self) -> bool:
        """Whether each patch's phase is known only up to a constant: a network trained
        through the physics alone, where no label fixes it (its mosaic aligns the patches)."""
        return self.training.get("mode") == "self-supervised"

    def illumination(self) -> np.ndarray:
        """(n, n) probe intensity over the output field, summed over modes."""
        return np.sum(np.abs(self.probe) ** 2, axis=0)

    def alarm_limits(self) -> tuple[float, float]:
        """(minor, major) alarm limits of the diffraction residual: the model's own, or
        FALLBACK_RESIDUAL_LIMITS for a model validated without it."""
        return self.residual_limits() or FALLBACK_RESIDUAL_LIMITS

    def residual_limits(self) -> tuple[float, float] | None:
        """(minor, major) alarm limits of the diffraction residual, from the validation data:
        None for a model validated without it."""
        limits = self.validation.get("residual_alarm")
        return (float(limits[0]), float(limits[1])) if limits else None

    def to_json(self) -> str:
        data = {key: value for key, value in asdict(self).items()
                if key not in ("instrument", "probe")}
        data["preprocessing"] = self.preprocessing.as_dict()
        data["geometry"] = asdict(self.instrument.geometry)
        data["photons"] = self.instrument.photons
        data["probe_modes"] = self.instrument.modes
        data["object_pixel_size"] = self.object_pixel_size  # for readers; derived
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, probe: np.ndarray, mask: np.ndarray | None = None
                  ) -> Manifest:
        """The manifest in `text`, with the instrument's `probe` and `mask` (read from their
        own files)."""
        data = json.loads(text)
        for derived in ("object_pixel_size", "probe_modes"):
            data.pop(derived, None)
        preprocessing = Preprocessing(**data.pop("preprocessing"))
        instrument = Instrument(Geometry(**data.pop("geometry")), probe, data.pop("photons"),
                                preprocessing.orientation, mask)
        return cls(shape=ModelShape(**data.pop("shape")), preprocessing=preprocessing,
                   instrument=instrument, **data)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_paths(name: str, directory: Path = MODEL_DIR) -> dict[str, Path]:
    """The files of model `name`, which must be a plain name in `directory`."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ModelError(f"model name {name!r} must be a plain name in {directory}")
    return {"weights": directory / f"{name}.pt", "graph": directory / f"{name}.onnx",
            "probe": directory / f"{name}.probe.npy", "mask": directory / f"{name}.mask.npy",
            "manifest": directory / f"{name}.json"}


def copy_model(name: str, source: Path, directory: Path, as_name: str | None = None) -> None:
    """Copy the bundle of model `name` in `source` into `directory` (made if need be), as
    `as_name` if given: every file the bundle has."""
    directory.mkdir(parents=True, exist_ok=True)
    target = model_paths(as_name or name, directory)
    for kind, path in model_paths(name, source).items():
        if path.is_file():
            shutil.copyfile(path, target[kind])


def save_model(model: PtychoNN, manifest: Manifest, directory: Path = MODEL_DIR) -> Path:
    """Write the bundle; the sha256 are filled in here. All files appear, or none changes."""
    import torch

    from ptychoedge.inference.onnx_export import export_fp32

    paths = model_paths(manifest.name, directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".saving-") as staging:
            staged = {kind: Path(staging) / path.name for kind, path in paths.items()}
            torch.save(model.state_dict(), staged["weights"])
            export_fp32(model, manifest.shape.input_size, staged["graph"])
            np.save(staged["probe"], manifest.instrument.probe)
            kinds = ["weights", "graph", "probe"]
            if manifest.instrument.mask is not None:
                np.save(staged["mask"], manifest.instrument.mask)
                kinds.append("mask")
            manifest.sha256 = {kind: sha256_of(staged[kind]) for kind in kinds}
            staged["manifest"].write_text(manifest.to_json() + "\n")
            # the manifest last: until it is replaced, the old one's digests refuse a mix
            for kind in (*kinds, "manifest"):
                os.replace(staged[kind], paths[kind])
    except OSError as error:
        raise ModelError(f"cannot write model {manifest.name!r} to {directory}: "
                         f"{error.strerror or error}") from error
    return paths["manifest"]


def _inside(path: Path, directory: Path) -> None:
    """Refuse a file that is a link to somewhere outside `directory`."""
    if path.resolve().parent != directory.resolve():
        raise ModelError(f"{path.name} leads outside the model directory {directory}")


def _checked_file(name: str, kind: str, path: Path, directory: Path, digest: str | None) -> None:
    if not path.is_file():
        raise ModelError(f"model {name!r}: no {kind} file {path.name}")
    _inside(path, directory)
    if sha256_of(path) != digest:
        raise ModelError(f"model {name!r}: {path.name} does not match the sha256 in its manifest")


def load_manifest(name: str, directory: Path = MODEL_DIR) -> Manifest:
    """The manifest of model `name` with its probe, after checking the probe's sha256."""
    paths = model_paths(name, directory)
    manifest_path = paths["manifest"]
    if not manifest_path.is_file():
        raise ModelError(f"no model {name!r} in {directory} (no {manifest_path.name})")
    _inside(manifest_path, directory)
    try:
        text = manifest_path.read_text()
        digests = json.loads(text).get("sha256", {})
        _checked_file(name, "probe", paths["probe"], directory, digests.get("probe"))
        probe = checked_probe(np.load(paths["probe"], allow_pickle=False), paths["probe"].name)
        mask = None
        if "mask" in digests:
            _checked_file(name, "mask", paths["mask"], directory, digests["mask"])
            mask = np.load(paths["mask"], allow_pickle=False)
        manifest = Manifest.from_json(text, probe, mask)
        manifest.probe  # noqa: B018 - a probe too small for the crop fails here, not later
    except ModelError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as error:
        raise ModelError(f"{manifest_path.name}: not a valid model bundle ({error})") from error
    manifest.name = name
    return manifest


def bundled_graph(manifest: Manifest, directory: Path = MODEL_DIR) -> Path | None:
    """The fp32 ONNX graph of the loaded model `manifest`, or None for a bundle made before
    graphs were bundled. Every file of the bundle must match its sha256, the weights too
    (unused here): a bundle that was tampered with is refused whichever backend runs it."""
    if "graph" not in manifest.sha256:
        return None
    paths = model_paths(manifest.name, directory)
    for kind in ("weights", "graph"):
        _checked_file(manifest.name, kind, paths[kind], directory, manifest.sha256.get(kind))
    return paths["graph"]


def load_model(name: str, directory: Path = MODEL_DIR) -> tuple[PtychoNN, Manifest]:
    """The model `name` from `directory`, after checking its files against its manifest."""
    import torch

    from ptychoedge.inference.model import PtychoNN

    manifest = load_manifest(name, directory)
    weights = model_paths(name, directory)["weights"]
    _checked_file(name, "weights", weights, directory, manifest.sha256.get("weights"))
    model = PtychoNN(manifest.shape)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # a corrupt file or a state of another shape
        raise ModelError(f"model {name!r}: cannot load {weights.name} ({error})") from error
    return model.eval(), manifest

