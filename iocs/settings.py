"""The knobs' values as the supervisor takes them: `Settings`, one field per knob.

Each knob of pvdb/pipeline.py names its field (`PvSpec.setting`), a field of
`Settings` or of its `config` (`ModelConfig`, what the instances run). Defaults
come from the knobs' initial values; an enum knob's field holds its choice's
string, or a bool for Off/On and Stop/Run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from ptychoedge.pvdb import pipeline
from ptychoedge.pvdb.processors import ModelConfig
from ptychoedge.pvdb.spec import PvSpec


@dataclass(frozen=True)
class Settings:
    """What the knobs ask for: each field is a knob's `setting` (pvdb/pipeline.py)."""

    run: bool = bool(pipeline.knob("run").initial)
    input_channel: str = str(pipeline.initial_setting("input_channel"))
    nodes: int = int(pipeline.initial_setting("nodes"))
    instances: int = int(pipeline.initial_setting("instances"))  # on each node
    config: ModelConfig = ModelConfig()
    auto_scale: bool = bool(pipeline.knob("auto_scale").initial)
    target_rate: float = float(pipeline.initial_setting("target_rate"))
    max_instances: int = int(pipeline.initial_setting("max_instances"))
    auto_adapt: bool = bool(pipeline.knob("auto_adapt").initial)
    adapt_frames: int = int(pipeline.initial_setting("adapt_frames"))
    adapt_epochs: int = int(pipeline.initial_setting("adapt_epochs"))
    adapt_instrument: str = str(pipeline.initial_setting("adapt_instrument"))
    refine_seconds: float = float(pipeline.initial_setting("refine_seconds"))

    def values(self) -> dict[str, Any]:
        """Every field by its name, the configuration's among them."""
        values = asdict(self)
        config = values.pop("config")
        return {**values, **config}

    def changed(self, **changes: Any) -> Settings:
        """These settings with `changes` (fields by name, the configuration's among them)."""
        config = {k: changes.pop(k) for k in list(changes)
                  if k in ModelConfig.__dataclass_fields__}
        return replace(self, **changes, config=replace(self.config, **config))


_TYPES = {name: type(value) for name, value in Settings().values().items()}


def setting_value(spec: PvSpec, value: Any) -> Any:
    """A knob record's `value` as the field `spec.setting` holds it."""
    kind = _TYPES[spec.setting]
    if kind is bool:
        return bool(value)
    if spec.choices:
        return spec.choices[int(value)]
    return kind(value)


def record_value(spec: PvSpec, value: Any) -> Any:
    """A field's `value` as the record of its knob `spec` holds it (an enum by index)."""
    if isinstance(value, bool):
        return int(value)
    if spec.choices:
        return spec.choices.index(value)
    return value


def settings_from(records: Mapping[str, Any]) -> Settings:
    """The settings that the knob records' values (by knob name) ask for."""
    return Settings().changed(**{spec.setting: setting_value(spec, records[spec.name])
                                 for spec in pipeline.KNOBS})


def record_values(settings: Settings) -> dict[str, Any]:
    """The knob records' values (by knob name) that show `settings`."""
    values = settings.values()
    return {spec.name: record_value(spec, values[spec.setting]) for spec in pipeline.KNOBS}
