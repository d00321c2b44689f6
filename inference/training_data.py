"""Frames to train on: simulated for an instrument, or a recorded scan.

A `Part` holds, per frame, the network input, the binned counts (what the physics
loss and the residual compare against), the position in object pixels of the
network's output (for the neighbours' overlap) and, where known, the true amplitude
and phase at the network's object pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ptychoedge.inference.comparison import coarsened, coarsening
from ptychoedge.inference.instrument import Instrument, InstrumentError, checked_probe
from ptychoedge.inference.preprocess import FrameError, Preprocessing, split

# The live simulator's sample is "default" with seed 0; training never sees seed 0, and
# the Siemens star and the strong-phase family are kept for scoring unseen kinds.
TRAINING_KINDS = ("default", "labyrinth", "particles", "fibres")
SAMPLE_SIDE = 1024  # px of each simulated sample, at the instrument's object pixel
BLOCK = 256  # frames simulated at a time


class ScanError(ValueError):
    """A recorded scan or reconstruction that cannot be trained on, with the reason."""


@dataclass
class Part:
    inputs: np.ndarray  # (n, 1, s, s) float32
    counts: np.ndarray  # (n, s, s) float32 binned counts
    pixels: np.ndarray  # (n, 2) float x, y in output object pixels
    targets: np.ndarray | None = None  # (n, 2, s, s) amplitude, phase

    def subset(self, chosen: np.ndarray) -> Part:
        return Part(self.inputs[chosen], self.counts[chosen], self.pixels[chosen],
                    None if self.targets is None else self.targets[chosen])


def simulated_instrument(photons: float) -> Instrument:
    from ptychoedge.sim import physics
    return physics.default_instrument(128, photons)


def load_probe(path: Path) -> np.ndarray:
    try:
        return checked_probe(np.load(path, allow_pickle=False), str(path))
    except (OSError, ValueError) as error:
        if isinstance(error, InstrumentError):
            raise
        raise InstrumentError(f"{path}: not a readable .npy probe ({error})") from error


def sample_kinds(text: str) -> tuple[str, ...]:
    from ptychoedge.sim.samples import SAMPLE_KINDS
    kinds = tuple(kind.strip() for kind in text.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in SAMPLE_KINDS]
    if unknown or not kinds:
        raise InstrumentError(f"unknown sample kind(s) {', '.join(unknown) or '(none)'}: choose "
                              f"from {', '.join(SAMPLE_KINDS)}")
    return kinds


def simulated(instrument: Instrument, preprocessing: Preprocessing, kinds: tuple[str, ...],
              seeds: tuple[int, ...], count: int, rng: np.random.Generator) -> Part:
    """`count` frames at random positions, spread over every (kind, seed) sample."""
    from ptychoedge.sim import physics
    from ptychoedge.sim.samples import named_sample

    canonical = preprocessing.canonical(instrument.window)
    pixel = instrument.geometry.object_pixel_size(preprocessing.crop_size)
    parts = []
    samples = [(kind, seed) for kind in kinds for seed in seeds]
    per_sample = -(-count // len(samples))
    side = max(SAMPLE_SIDE, 2 * instrument.window)
    # anywhere the window stays on the sample
    radius = (side - instrument.window) / 2 * instrument.object_pixel_size
    for kind, seed in samples:
        simulator = physics.simulator_for(instrument, seed=seed,
                                          sample=named_sample(kind, (side, side), seed))
        positions = rng.uniform(-radius, radius, size=(per_sample, 2))
        for start in range(0, per_sample, BLOCK):
            frames, truth = simulator.frames(positions[start:start + BLOCK], rng=rng)
            counts = canonical.binned(frames, check_beam=False)
            parts.append(Part(canonical.normalise(counts), counts,
                              positions[start:start + BLOCK] / pixel,
                              preprocessing.targets(truth)))
    return Part(*(np.concatenate([getattr(p, name) for p in parts])[:count]
                  for name in ("inputs", "counts", "pixels", "targets")))


def recorded_scan(path: Path, preprocessing: Preprocessing, pixel: float,
                  reconstruction: Path | None = None) -> Part:
    """A recorded scan's frames, and with `reconstruction` its patches as targets."""
    from ptychoedge.inference.scan_file import ScanFileError, load_scan

    try:
        frames, positions = load_scan(path)
    except ScanFileError as error:
        raise ScanError(str(error)) from None
    try:
        counts = np.concatenate([preprocessing.binned(frames[i:i + BLOCK], check_beam=False)
                                 for i in range(0, len(frames), BLOCK)])
    except FrameError as error:
        raise ScanError(f"{path}: {error}") from None
    part = Part(preprocessing.normalise(counts), counts, positions / pixel)
    if reconstruction is not None:
        obj, obj_pixel, origin = read_object(reconstruction)
        part.targets = split(patches_of(obj, obj_pixel, origin, positions, pixel,
                                        preprocessing.input_size, reconstruction))
    return part


def read_object(path: Path) -> tuple[np.ndarray, float, tuple[float, float]]:
    """A reconstructed object (complex, 2-D), its pixel size (m) and the pixel (x, y) of
    scan position 0: `origin` where the file has it, else the centre pixel (shape // 2)."""
    if not path.is_file():
        raise ScanError(f"{path}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = {"object", "pixel_size"} - set(data.files)
                if missing:
                    raise ScanError(f"{path}: missing {', '.join(sorted(missing))}")
                obj, pixel = data["object"], float(data["pixel_size"])
                origin = tuple(data["origin"]) if "origin" in data.files else None
        else:
            with h5py.File(path, "r") as f:
                if "entry_1/image_1/data" not in f:
                    raise ScanError(f"{path}: no object at entry_1/image_1/data")
                obj = f["entry_1/image_1/data"][()]
                if "entry_1/image_1/x_pixel_size" not in f:
                    raise ScanError(f"{path}: no pixel size at entry_1/image_1/x_pixel_size")
                pixel = float(np.ravel(f["entry_1/image_1/x_pixel_size"][()])[0])
                origin = (tuple(f["entry_1/image_1/origin"][()])
                          if "entry_1/image_1/origin" in f else None)
    except OSError as error:
        raise ScanError(f"{path}: not readable ({error})") from error
    obj = np.asarray(obj)
    while obj.ndim > 2 and obj.shape[0] == 1:  # (1, h, w) slices or modes
        obj = obj[0]
    if obj.ndim != 2 or not np.iscomplexobj(obj):
        raise ScanError(f"{path}: the object must be a complex 2-D array, got {obj.dtype} "
                        f"{obj.shape}")
    if not np.all(np.isfinite(obj)) or not (np.isfinite(pixel) and pixel > 0):
        raise ScanError(f"{path}: non-finite values or pixel size")
    if origin is None:
        origin = (obj.shape[1] // 2, obj.shape[0] // 2)
    return obj.astype(np.complex64), pixel, (float(origin[0]), float(origin[1]))


def patches_of(obj: np.ndarray, obj_pixel: float, origin: tuple[float, float],
               positions: np.ndarray, pixel: float, size: int, source: Path) -> np.ndarray:
    """(n, size, size) patches of `obj` at `pixel` (an integer multiple of its own),
    centred at each position; position 0 is the object's pixel `origin` (x, y)."""
    factor = coarsening(obj_pixel, pixel)
    if factor is None:
        raise ScanError(f"{source}: object pixel {obj_pixel * 1e9:.2f} nm, the model's is "
                        f"{pixel * 1e9:.2f} nm: it must be the same or an integer fraction")
    coarse = coarsened(obj, factor)
    centre = np.array(origin) / factor  # (x, y) of position 0
    corners = np.rint(positions / pixel + centre - size // 2).astype(int)
    ch, cw = coarse.shape
    if (corners.min() < 0 or corners[:, 0].max() + size > cw
            or corners[:, 1].max() + size > ch):
        raise ScanError(f"{source}: the object ({obj.shape[1]}x{obj.shape[0]} px of "
                        f"{obj_pixel * 1e9:.1f} nm) does not cover every scan position with "
                        "the model's field")
    return np.stack([coarse[y:y + size, x:x + size] for x, y in corners])
