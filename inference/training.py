"""`ptychoedge train`: a PtychoNN model for an instrument, in one of three ways.

- simulated (the default, or `--instrument FILE.cxi`): frames the forward model makes
  with the instrument's probe and geometry over procedural samples, the true patches
  as labels (L1 of amplitude and of the wrapped phase difference);
- `--scan FILE.cxi --reconstruction FILE`: a recorded scan, labelled with patches of
  its iterative reconstruction at the scan positions (supervised);
- `--scan FILE.cxi` alone: self-supervised through the physics: the predicted patch
  behind the probe must explain the measured counts (physics_loss.py), and
  neighbouring frames must agree where they overlap. Needs frames, positions, probe.

`--from NAME` starts from a model's weights (and keeps its crop and binning). The
bundle (manifest.py) records the instrument, the lineage (parent, data, recipe) and
the validation figures, the residual's distribution among them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ptychoedge.inference import training_data
from ptychoedge.inference.instrument import (
    Geometry,
    Instrument,
    InstrumentError,
    Orientation,
    read_mask,
)
from ptychoedge.inference.manifest import (
    DEFAULT_MODEL,
    MODEL_DIR,
    Manifest,
    ModelError,
    load_model,
    save_model,
)
from ptychoedge.inference.model import (
    PtychoNN,
    count_parameters,
    initialise,
    start_at_empty_beam,
)
from ptychoedge.inference.model_shape import NORMS, OUTPUTS, ModelShape
from ptychoedge.inference.physics_loss import (
    complex_patches,
    diffraction_loss,
    neighbour_pairs,
    overlap_loss,
)
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.inference.quality import DiffractionResidual
from ptychoedge.inference.scores import image_pair_scores

log = logging.getLogger("ptychoedge.train")

FIRST_TRAINING_SEED = 101  # samples 101, 102, ...: never the live sample's seed 0
MAX_TRAINING_SAMPLES = 99  # seeds 101-199: clear of validation's 201 and scoring's 301
VALIDATION_SEED = 201
HELD_OUT_EVERY = 10  # every tenth frame of a recorded scan validates, the rest trains
# Residual alarm limits: MINOR at 3x the validation frames' 90th percentile (but not
# below 1.5x their 99th), MAJOR at twice that; both within the residual's 0..2 scale.
MINOR_OVER_P90, MINOR_OVER_P99, MAJOR_OVER_MINOR = 3.0, 1.5, 2.0


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return value
    return parse


def _input_size(text: str) -> int:
    size = _positive(int)(text)
    try:
        ModelShape(size)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return size


def _sample_seeds(text: str) -> int:
    count = _positive(int)(text)
    if count > MAX_TRAINING_SAMPLES:
        raise argparse.ArgumentTypeError(f"at most {MAX_TRAINING_SAMPLES} samples of each "
                                         f"family (seeds {FIRST_TRAINING_SEED}-"
                                         f"{FIRST_TRAINING_SEED + MAX_TRAINING_SAMPLES - 1}), "
                                         f"not {count}")
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=MODEL_DIR,
                        help="where to write the bundle (default: the shipped models)")
    data = parser.add_argument_group("what to learn from")
    data.add_argument("--instrument", type=Path, metavar="FILE.cxi",
                      help="simulate frames of this instrument (probe, energy, distance, pixel)")
    data.add_argument("--scan", type=Path, metavar="FILE.cxi",
                      help="a recorded scan (frames, positions, probe, geometry); without "
                           "--reconstruction, trained self-supervised through the physics")
    data.add_argument("--reconstruction", type=Path, metavar="FILE",
                      help="the scan's iterative reconstruction as labels: CXI "
                           "(entry_1/image_1/data, x_pixel_size) or .npz (object, pixel_size); "
                           "scan position (0, 0) is its pixel `origin` (x, y) where the file "
                           "has one, else its centre pixel (shape // 2)")
    data.add_argument("--from", dest="parent", metavar="NAME",
                      help="start from this model's weights; keeps its crop and binning")
    data.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                      help="where --from is found (default: the shipped models)")
    instrument = parser.add_argument_group(
        "the instrument from numbers (instead of a CXI file)")
    instrument.add_argument("--probe", type=Path, metavar="FILE.npy",
                            help="complex probe (n, n) or (modes, n, n) at the object pixel of "
                                 "an n-pixel detector window")
    instrument.add_argument("--energy", type=_positive(float), metavar="EV",
                            help="photon energy (eV)")
    instrument.add_argument("--distance", type=_positive(float), metavar="M",
                            help="sample to detector (m)")
    instrument.add_argument("--pixel-size", type=_positive(float), metavar="M",
                            help="detector pixel (m)")
    instrument.add_argument("--transpose", action="store_true",
                            help="frames arrive transposed")
    instrument.add_argument("--mask", type=Path, metavar="FILE",
                            help="the detector's mask (.npy, or a CXI or NeXus NXmx file's), "
                                 "(ny, nx) of the frames as they arrive, "
                                 "nonzero for a pixel that measures nothing (module gaps, dead "
                                 "or hot pixels); replaces a scan's or instrument file's own")
    instrument.add_argument("--flip-x", action="store_true", help="frames arrive mirrored in x")
    instrument.add_argument("--flip-y", action="store_true", help="frames arrive mirrored in y")
    instrument.add_argument("--beam-center", type=float, nargs=2, metavar=("X", "Y"),
                            help="direct beam pixel in the oriented frame (default: centre)")
    network = parser.add_argument_group("the network")
    network.add_argument("--input-size", type=_input_size, default=64,
                         help="network input and output in pixels (default %(default)s)")
    network.add_argument("--crop", type=_positive(int),
                         help="detector pixels around the beam the network sees, binned down "
                              "to --input-size (default: --input-size, no binning: the field "
                              "is the whole probe window)")
    network.add_argument("--fold", type=_positive(int), default=1,
                         help="fold the input into fold x fold channels of 1/fold the size "
                              "and unfold the output: --input-size 128 --fold 2 sees a whole "
                              "128-pixel frame at about the cost of a 64 network "
                              "(default %(default)s)")
    network.add_argument("--width", type=_positive(int), default=16,
                         help="channels of the first level (PtychoNN: 32; default %(default)s)")
    network.add_argument("--output", choices=OUTPUTS,
                         help="how the last layers become amplitude and phase: bounded "
                              "(sigmoid, pi tanh) or free (exp, wrapped; nothing saturates); "
                              "default: free when self-supervised, else bounded (or a --from "
                              "model's own)")
    network.add_argument("--norm", choices=NORMS, default="batch",
                         help="normalisation after each hidden convolution (default "
                              "%(default)s; none is the original PtychoNN, slow to train)")
    recipe = parser.add_argument_group("the recipe")
    recipe.add_argument("--samples", type=_positive(int), default=8000,
                        help="simulated training frames (default %(default)s)")
    recipe.add_argument("--validation", type=_positive(int), default=400,
                        help="simulated validation frames, of a sample of its own "
                             "(default %(default)s)")
    recipe.add_argument("--sample-seeds", type=_sample_seeds, default=4, metavar="N",
                        help="simulated samples of each family to train on, seeds 101 to "
                             "100+N (default %(default)s; at most 99)")
    recipe.add_argument("--sample-kinds", default=",".join(training_data.TRAINING_KINDS),
                        help="sample families to simulate, comma-separated "
                             "(default %(default)s)")
    recipe.add_argument("--epochs", type=_positive(int), default=8,
                        help="passes over the training frames (default %(default)s)")
    recipe.add_argument("--batch-size", type=_positive(int), default=32,
                        help="frames per step (default %(default)s)")
    recipe.add_argument("--lr", type=_positive(float), default=1e-3,
                        help="peak learning rate of the one-cycle schedule (default %(default)s)")
    recipe.add_argument("--photons", type=_positive(float),
                        help="counts per frame with no sample (default: the instrument's; 1e6 "
                             "for the simulated one)")
    recipe.add_argument("--overlap-weight", type=float, default=1.0,
                        help="self-supervised: weight of the neighbours' agreement "
                             "(default %(default)s)")
    recipe.add_argument("--threads", type=_positive(int),
                        help="CPU threads (default: every core this process may use; on a "
                             "busy machine 1 can be several times faster)")
    recipe.add_argument("--seed", type=int, default=0,
                        help="seed of positions, noise and weights (default %(default)s)")


@dataclass
class Start:
    """What a training run starts from: the network, its preprocessing, the instrument."""

    model: PtychoNN
    preprocessing: Preprocessing
    instrument: Instrument
    parent: dict | None


def instrument_of(args: argparse.Namespace, parent: Manifest | None) -> Instrument:
    """The instrument the options name: a scan's, an instrument file's, numbers, the
    parent's, or the simulated one."""
    orientation = Orientation(args.transpose, args.flip_y, args.flip_x,
                              *(args.beam_center or (None, None)))
    if parent is not None and orientation == Orientation():
        orientation = parent.instrument.orientation  # a scan of the parent's detector
    photons = args.photons
    mask = read_mask(args.mask) if args.mask else None
    if args.scan or args.instrument:
        from ptychoedge.inference.instrument import read_cxi
        return read_cxi(args.scan or args.instrument, photons=photons, orientation=orientation,
                        mask=mask)
    if args.probe:
        missing = [name for name in ("energy", "distance", "pixel_size")
                   if getattr(args, name) is None]
        if missing:
            options = ", ".join("--" + name.replace("_", "-") for name in missing)
            raise InstrumentError(f"--probe needs {options}")
        probe = training_data.load_probe(args.probe)
        n = probe.shape[-1]
        return Instrument(Geometry(args.energy, args.distance, args.pixel_size, (n, n)), probe,
                          photons or 1e6, orientation, mask)
    if parent is not None:
        return Instrument(parent.instrument.geometry, parent.instrument.probe,
                          photons or parent.instrument.photons, parent.instrument.orientation,
                          parent.instrument.mask if mask is None else mask)
    instrument = training_data.simulated_instrument(photons or 1e6)
    return instrument if mask is None else dataclasses.replace(instrument, mask=mask)


def starting_point(args: argparse.Namespace) -> Start:
    parent_info, parent_manifest = None, None
    if args.parent:
        model, parent_manifest = load_model(args.parent, args.model_dir)
        parent_info = {"name": args.parent, "weights_sha256": parent_manifest.sha256["weights"]}
    instrument = instrument_of(args, parent_manifest)
    self_supervised = bool(args.scan and not args.reconstruction)
    if parent_manifest is not None:
        kept = parent_manifest.preprocessing
        preprocessing = Preprocessing(kept.crop_size, kept.input_size, kept.scale,
                                      instrument.orientation)
        output = args.output or ("free" if self_supervised else model.shape.output)
        if output != model.shape.output:
            # the parent's features, other last activations (no weights of their own); the
            # heads' last convolutions restart at the empty beam and learn to read them
            reshaped = PtychoNN(dataclasses.replace(model.shape, output=output))
            reshaped.load_state_dict(model.state_dict())
            start_at_empty_beam(reshaped)
            model = reshaped
    else:
        crop = args.crop or args.input_size
        try:
            preprocessing = Preprocessing(crop, args.input_size,
                                          1.0 / np.log1p(instrument.photons),
                                          instrument.orientation)
        except ValueError as error:
            raise InstrumentError(str(error)) from None
        torch.manual_seed(args.seed)
        output = args.output or ("free" if self_supervised else "bounded")
        model = PtychoNN(ModelShape(args.input_size, args.width, args.norm, output, args.fold))
        if self_supervised:
            # with no labels, an untrained network whose output ignores its input settles
            # on one patch for every frame: start at the empty beam, the frames' signal alive
            initialise(model)
    instrument.model_probe(preprocessing.crop_size, preprocessing.binning)  # fits, or says why
    return Start(model, preprocessing, instrument, parent_info)


class Progress:
    """One line on stderr, rewritten in place: epoch, batch, loss, rate, time left."""

    def __init__(self, epochs: int, batches: int, frames: int):
        self.epochs, self.batches, self.total = epochs, batches, epochs * frames
        self.done, self.started, self.shown = 0, time.monotonic(), 0.0

    def step(self, epoch: int, batch: int, loss: float, frames: int) -> None:
        self.done += frames
        now = time.monotonic()
        if now - self.shown < 1.0 and self.done < self.total:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate
        sys.stderr.write(f"\repoch {epoch}/{self.epochs}  batch {batch}/{self.batches}  "
                         f"loss {loss:.4f}  {rate:6.0f} frames/s  ETA {left:5.0f} s ")
        sys.stderr.flush()


def supervised_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of amplitude plus L1 of the phase difference wrapped to (-pi, pi]."""
    amplitude = (output[:, 0] - target[:, 0]).abs().mean()
    difference = output[:, 1] - target[:, 1]
    phase = torch.atan2(torch.sin(difference), torch.cos(difference)).abs().mean()
    return amplitude + phase


def optimise(model: PtychoNN, count: int, loss_of, args: argparse.Namespace) -> float:
    """Adam with a one-cycle schedule over `count` frames; `loss_of(indices)` gives a batch's
    loss. The last epoch's mean loss."""
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = -(-count // args.batch_size)
    # a short warm-up: a fine-tune of a few minutes must not spend a third of them there
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, pct_start=0.05,
                                                   total_steps=args.epochs * batches)
    progress = Progress(args.epochs, batches, count)
    epoch_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        order = torch.randperm(count)
        for batch, start in enumerate(range(0, count, args.batch_size), 1):
            index = order[start:start + args.batch_size]
            loss = loss_of(index)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
            progress.step(epoch, batch, loss.item(), len(index))
        epoch_loss = total / count
    sys.stderr.write("\n")
    model.eval()
    return epoch_loss


def predict(model: PtychoNN, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(inputs[i:i + 64])).numpy()
                               for i in range(0, len(inputs), 64)])


def residual_figures(manifest: Manifest, counts: np.ndarray, predicted: np.ndarray) -> dict:
    """The residual's distribution on validation frames, and the alarm limits it sets."""
    residuals = DiffractionResidual(manifest)(counts, predicted[:, 0], predicted[:, 1])
    p50, p90, p99 = (float(np.percentile(residuals, q)) for q in (50, 90, 99))
    minor = min(max(MINOR_OVER_P90 * p90, MINOR_OVER_P99 * p99), 1.0)
    return {"residual_p50": p50, "residual_p90": p90, "residual_p99": p99,
            "residual_alarm": [minor, min(MAJOR_OVER_MINOR * minor, 2.0)]}


def train(args: argparse.Namespace) -> tuple[PtychoNN, Manifest]:
    """Train as the options say; the model and its manifest (not yet saved)."""
    started = time.monotonic()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = starting_point(args)
    model, preprocessing, instrument = start.model, start.preprocessing, start.instrument
    manifest = Manifest.for_instrument(args.name, model.shape, preprocessing, instrument)
    probe = torch.from_numpy(manifest.probe)
    log.info("training %s: %d weights, %d threads; object pixel %.1f nm, field %d px",
             model.shape, count_parameters(model), torch.get_num_threads(),
             manifest.object_pixel_size * 1e9, preprocessing.input_size)
    if args.scan:
        scan = training_data.recorded_scan(args.scan, manifest.preprocessing,
                                           manifest.object_pixel_size, args.reconstruction)
        held_out = np.arange(len(scan.inputs)) % HELD_OUT_EVERY == 0
        train_part, valid_part = scan.subset(~held_out), scan.subset(held_out)
        data = {"scan": str(args.scan), "scan_sha256": _file_sha256(args.scan),
                "frames": len(scan.inputs)}
        if args.reconstruction:
            data |= {"reconstruction": str(args.reconstruction),
                     "reconstruction_sha256": _file_sha256(args.reconstruction)}
    else:
        kinds = training_data.sample_kinds(args.sample_kinds)
        seeds = tuple(range(FIRST_TRAINING_SEED, FIRST_TRAINING_SEED + args.sample_seeds))
        train_part = training_data.simulated(instrument, manifest.preprocessing, kinds, seeds,
                                             args.samples, rng)
        valid_part = training_data.simulated(instrument, manifest.preprocessing, kinds,
                                             (VALIDATION_SEED,), args.validation, rng)
        data = {"simulated": list(kinds), "sample_seeds": list(seeds),
                "validation_seed": VALIDATION_SEED, "samples": args.samples,
                "photons": instrument.photons}
    x_all = torch.from_numpy(train_part.inputs)
    if train_part.targets is not None:
        mode = "supervised"
        y_all = torch.from_numpy(train_part.targets)

        def loss_of(index: torch.Tensor) -> torch.Tensor:
            return supervised_loss(model(x_all[index]), y_all[index])
    else:
        mode = "self-supervised"
        counts_all = torch.from_numpy(train_part.counts)
        pairs = neighbour_pairs(train_part.pixels, preprocessing.input_size)
        weight = torch.from_numpy(manifest.illumination())
        measured = manifest.preprocessing.measured()
        if measured is not None:
            measured = torch.from_numpy(measured.astype(np.float32))
        log.info("self-supervised on %d frames, %d overlapping pairs", len(x_all), len(pairs))

        def loss_of(index: torch.Tensor) -> torch.Tensor:
            if not (args.overlap_weight and len(pairs)):
                return diffraction_loss(model(x_all[index]), counts_all[index], probe,
                                        instrument.photons, measured)
            # the batch as neighbour pairs: one pass serves both terms
            chosen = pairs[rng.integers(len(pairs), size=max(1, len(index) // 2))]
            frames = torch.from_numpy(chosen.ravel())
            output = model(x_all[frames])
            patches = complex_patches(output)
            shifts = np.rint(train_part.pixels[chosen[:, 1]]
                             - train_part.pixels[chosen[:, 0]]).astype(int)
            return (diffraction_loss(output, counts_all[frames], probe, instrument.photons,
                                     measured)
                    + args.overlap_weight * overlap_loss(patches[0::2], patches[1::2], shifts,
                                                         weight))
    log.info("%s training on %d frames, validating on %d", mode, len(x_all),
             len(valid_part.inputs))
    final_loss = optimise(model, len(x_all), loss_of, args)
    predicted = predict(model, valid_part.inputs)
    validation = residual_figures(manifest, valid_part.counts, predicted)
    if valid_part.targets is not None:
        validation |= image_pair_scores(predicted, valid_part.targets)
    manifest.training = {
        "mode": mode, "parent": start.parent, "data": data,
        "recipe": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "optimiser": "Adam, one-cycle", "seed": args.seed,
                   "loss": ("L1 of amplitude and of the wrapped phase difference"
                            if mode == "supervised" else
                            "squared misfit of predicted and measured diffraction amplitudes"
                            f" + {args.overlap_weight} x neighbours' overlap disagreement")},
        "final_loss": final_loss, "seconds": round(time.monotonic() - started, 1)}
    manifest.validation = validation
    return model, manifest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch sizes its pool by the host's cores; a container may be allowed fewer
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if args.reconstruction and not args.scan:
        print("ptychoedge train: error: --reconstruction needs --scan", file=sys.stderr)
        return 2
    try:
        ModelShape(args.input_size, fold=args.fold)
    except ValueError as error:
        print(f"ptychoedge train: error: {error}", file=sys.stderr)
        return 2
    try:
        model, manifest = train(args)
        path = save_model(model, manifest, args.out_dir)
    except (InstrumentError, ModelError, training_data.ScanError) as error:
        print(f"ptychoedge train: error: {error}", file=sys.stderr)
        return 2
    figures = manifest.validation
    print("validation: " + ", ".join(f"{key} {value:.3f}" for key, value in sorted(
        figures.items()) if isinstance(value, float)))
    print(f"wrote {path} and its weights and probe")
    return 0
