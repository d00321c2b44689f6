"""What the pipeline's processes say to each other: the processors' arguments and status.

The inference instances and the mosaic collector run pvapy processors
(inference/processor.py, inference/mosaic_processor.py) in processes of their
own; the supervisor (iocs/) starts them with `--processor-args`, changes them
with `configure` on their control channels and reads the `userStats` of their
status channels. Both sides build and read those fields here, and only here,
so a field renamed on one side fails a test rather than a status page.

The fields are snake_case in Python; on the wire each is its camelCase
(`batch_size` is `batchSize`), as pvapy's own fields are. The configuration's
fields are the knobs' `setting`s (pvdb/pipeline.py): their defaults, limits
and choices come from there.

This module imports neither pvaccess nor softioc: both kinds of process load it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ptychoedge.pvdb import pipeline

# The processors by class path, as pvapy-hpc-consumer and -collector load them
# (`--processor-class module.Class`, no `--processor-file`).
INSTANCE_PROCESSOR = "ptychoedge.inference.processor.PtychoNNProcessor"
COLLECTOR_PROCESSOR = "ptychoedge.inference.mosaic_processor.MosaicProcessor"
# Alarm limits (MINOR, MAJOR) of the instances' diffraction residual for a model whose
# manifest sets none: the residual runs from 0 (a perfect fit) to 2.
FALLBACK_RESIDUAL_LIMITS = (0.5, 1.0)
# Frames that vary VARIES times their counting noise are of a sample that scatters; answers
# that explain under EXPLAINS of that variation are nearly one answer for every frame (the
# sample's mean, not its structure). Measured in inference/MODELS.md ("Adaptation's recipe",
# "The fit guard"): such answers explained at most 3.2%, networks that had learnt the sample's
# phase (correlation 0.3 and above) 10% and more.
VARIES, EXPLAINS = 10.0, 0.05


def one_answer(frames_over_noise: float, explained: float) -> bool:
    """Whether answers are nearly one for every frame (frames that differ enough to say)."""
    return frames_over_noise >= VARIES and explained < EXPLAINS


# Neighbouring images of a true reconstruction agree where they overlap (inference/mosaic.py).
# Measured in inference/MODELS.md ("The fit guard"), over 100 patches and more: networks
# that read the sample agreed 0.33 to 0.66; those that could not -0.53 and below, images
# placed 1, 2 or 20 frames late -0.58 and below. Over 35 patches true reconstructions
# agreed 0.10 to 0.70: judged from OVERLAPS patches on, to leave the noise a margin.
AGREES, OVERLAPS = 0.0, 96


def disagree(frames_over_noise: float, agreement: float, overlaps: int) -> bool:
    """Whether neighbouring images disagree where they overlap (where enough is seen to say)."""
    return frames_over_noise >= VARIES and overlaps >= OVERLAPS and agreement < AGREES

# Kinds of malformed frame an instance refuses and counts apart (`errors_<kind>`).
ERROR_KINDS = ("rank", "empty", "pixel_type", "too_small", "too_large", "decode", "unique_id",
               "inference", "publish")

REQUEST = "request"  # the `configure` argument numbering a configuration request
REDRAW = "redraw"  # the collector's `configure` argument: its new model's redrawn scan (.npz)
PVA_TYPE = "pva"  # a field's metadata key: the pvaccess type constant it is published as
_PVA_TYPES = {int: "UINT", float: "DOUBLE", str: "STRING"}


def wire_name(name: str) -> str:
    """The camelCase name a snake_case field has on the wire."""
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)


@dataclass(frozen=True)
class ModelConfig:
    """What an instance runs; changed live through its control channel."""

    model: str = str(pipeline.initial_setting("model"))
    backend: str = str(pipeline.initial_setting("backend"))
    precision: str = str(pipeline.initial_setting("precision"))
    batch_size: int = int(pipeline.initial_setting("batch_size"))

    def problem(self) -> str | None:
        """Why the knobs' specs refuse this configuration, or None if they take it."""
        for item in fields(self):
            spec = pipeline.knob(item.name)
            value = getattr(self, item.name)
            if type(value) is not type(item.default):
                return f"{spec.name}: {value!r} refused, not of type {type(item.default).__name__}"
            if spec.choices:
                if value not in spec.choices:
                    return f"{spec.name}: {value!r} is not one of {', '.join(spec.choices)}"
            elif reason := spec.check(value):
                return reason
        return None

    def to_args(self) -> dict[str, Any]:
        """The processor's arguments for this configuration, by their wire names."""
        return {wire_name(name): value for name, value in asdict(self).items()}

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ModelConfig:
        """The configuration in a processor's arguments or status; KeyError if one lacks."""
        return cls(**{item.name: args[wire_name(item.name)] for item in fields(cls)})


CONFIG_ARGS = tuple(wire_name(item.name) for item in fields(ModelConfig))


@dataclass(frozen=True)
class InstanceArgs:
    """What an inference instance starts with: its `--processor-args`."""

    config: ModelConfig = ModelConfig()
    model_dir: str = ""  # "" for the shipped models
    max_wait: float = 0.005  # s a batch waits to fill
    threads: int = 1  # the backend's CPU threads
    first_delay: float = 0.0  # s the first outputs are held, while the collector finds them

    def to_args(self) -> dict[str, Any]:
        """The arguments by their wire names, the configuration's among them."""
        args = {wire_name(item.name): getattr(self, item.name) for item in fields(self)
                if item.name != "config"}
        return {**self.config.to_args(), **args}

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> InstanceArgs:
        """The arguments in `args`, defaults for those it lacks.

        pvapy adds its own to a processor's (`inputChannel`, ...): those are not read.
        """
        known = {wire_name(item.name): item.name for item in fields(cls) if item.name != "config"}
        config = ModelConfig.from_args({**ModelConfig().to_args(), **args})
        return cls(config, **{known[name]: value for name, value in args.items()
                              if name in known})


@dataclass(frozen=True)
class CollectorArgs:
    """What the mosaic collector starts with: its `--processor-args`."""

    prefix: str = "EDGE1:"  # its images are served under this prefix
    model: str = ModelConfig.model  # whose pixel size and probe stitch the patches
    model_dir: str = ""  # "" for the shipped models
    display_rate: float = 5.0  # Hz, image updates

    def to_args(self) -> dict[str, Any]:
        """The arguments by their wire names."""
        return _stats(self)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> CollectorArgs:
        """The arguments in `args`, defaults for those it lacks; pvapy's own are not read."""
        known = {wire_name(item.name): item.name for item in fields(cls)}
        return cls(**{known[name]: value for name, value in args.items() if name in known})


# What `configure` may change while an instance runs; its model directory, for one, is fixed.
RUNTIME_ARGS = (*CONFIG_ARGS, wire_name("max_wait"))


def configure_args(config: ModelConfig, request: int) -> dict[str, Any]:
    """The `configure` arguments that ask an instance for `config`, numbered `request`."""
    return {**config.to_args(), REQUEST: request}


def collector_configure_args(model: str, redraw: str = "") -> dict[str, Any]:
    """The `configure` arguments that give the collector `model`.

    With `redraw`, the mosaic file of the scan so far as that model redrew it.
    """
    return {"model": model, REDRAW: redraw}


def _stats(instance: Any) -> dict[str, Any]:
    return {wire_name(item.name): getattr(instance, item.name) for item in fields(instance)}


def _pva_types(cls: type) -> dict[str, str]:
    defaults = cls()
    return {wire_name(item.name): item.metadata.get(
        PVA_TYPE, _PVA_TYPES[type(getattr(defaults, item.name))]) for item in fields(cls)}


def _from_stats(cls: type, stats: Mapping[str, Any]) -> Any:
    defaults = cls()
    return cls(**{item.name: type(getattr(defaults, item.name))(stats[wire_name(item.name)])
                  for item in fields(cls)})


@dataclass(frozen=True)
class InstanceCounts:
    """An inference instance's own figures, since it started or was last reset."""

    published: int = field(default=0, metadata={PVA_TYPE: "ULONG"})  # outputs published
    rate: float = 0.0  # Hz, outputs published
    batch_fill: float = 0.0  # mean frames per batch over the batch size
    latency_p50: float = 0.0  # s, receipt to publication
    latency_p99: float = 0.0  # s
    inference_time: float = 0.0  # s of inference per frame
    residual_mean: float = 0.0  # the diffraction residual's mean
    # over the latest frames (0 for both until enough): how much they vary from frame to
    # frame beyond their counting noise, over it; and the share of that the answers explain
    frames_over_noise: float = 0.0
    explained: float = 0.0
    # pixels per frame (over the latest frames) outside the model's mask that are no counts
    # (the pixel type's maximum, or below 0): a detector's gaps the model does not know
    pixels_not_counts: float = 0.0
    queued: int = 0  # frames received, not yet reconstructed
    oldest_waiting: int = 0  # uniqueId of the oldest of those (in a batch or queued); 0: none
    errors: int = 0  # malformed frames refused, of every kind

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> InstanceCounts:
        """The figures in a flat dict by wire names; KeyError for a field it lacks."""
        return _from_stats(cls, stats)


@dataclass(frozen=True)
class InstanceStatus:
    """The `userStats` an inference instance publishes on its status channel."""

    counts: InstanceCounts = InstanceCounts()
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)  # of ERROR_KINDS
    config: ModelConfig = ModelConfig()  # what it runs
    answered: int = 0  # the last configuration request it answered
    config_error: str = ""  # why it refused that request ("" when it took it)

    def to_stats(self) -> dict[str, Any]:
        """The status as `getStats` returns it: flat, by wire names."""
        return {**_stats(self.counts),
                **{f"errors_{kind}": self.errors_by_kind.get(kind, 0) for kind in ERROR_KINDS},
                **self.config.to_args(), wire_name("answered"): self.answered,
                wire_name("config_error"): self.config_error}

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> InstanceStatus:
        """The status in a status channel's `userStats`; KeyError for a field it lacks."""
        return cls(InstanceCounts.from_stats(stats),
                   {kind: int(stats[f"errors_{kind}"]) for kind in ERROR_KINDS},
                   ModelConfig.from_args(stats), int(stats[wire_name("answered")]),
                   str(stats[wire_name("config_error")]))

    @staticmethod
    def pva_types() -> dict[str, str]:
        """Each field's pvaccess type constant, by wire name (`getStatsPvaTypes`)."""
        config = ModelConfig()
        return {**_pva_types(InstanceCounts),
                **{f"errors_{kind}": "UINT" for kind in ERROR_KINDS},
                **{wire_name(item.name): _PVA_TYPES[type(getattr(config, item.name))]
                   for item in fields(ModelConfig)},
                wire_name("answered"): "UINT", wire_name("config_error"): "STRING"}


@dataclass(frozen=True)
class CollectorStatus:
    """The `userStats` the mosaic collector publishes on its status channel."""

    placed: int = field(default=0, metadata={PVA_TYPE: "ULONG"})  # patches placed
    scans: int = 0  # mosaics begun: a new scan or a new model starts one
    errors: int = 0  # outputs without a usable patch, models refused
    patches: int = field(default=0, metadata={PVA_TYPE: "ULONG"})  # in the current mosaic
    received: int = field(default=0, metadata={PVA_TYPE: "ULONG"})  # outputs received
    # of the latest patches, those that met earlier ones (`overlaps`), and how well they
    # agreed with them (inference/mosaic.py; 0 for both until any did)
    agreement: float = 0.0
    overlaps: int = 0
    model: str = ""  # whose pixel size and probe the mosaic uses

    def to_stats(self) -> dict[str, Any]:
        """The status as `getStats` returns it, by wire names."""
        return _stats(self)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> CollectorStatus:
        """The status in a status channel's `userStats`; KeyError for a field it lacks."""
        return _from_stats(cls, stats)

    @staticmethod
    def pva_types() -> dict[str, str]:
        """Each field's pvaccess type constant, by wire name (`getStatsPvaTypes`)."""
        return _pva_types(CollectorStatus)
