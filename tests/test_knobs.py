"""One source for every knob: pvdb/ says it, and every other place agrees or derives from it.

A knob lives in pvdb/pipeline.py (name, kind, limits, default, choices) and
names its `setting`: a field of the supervisor's `Settings` or of the
instances' `ModelConfig`, whose camelCase is the processors' argument. These
tests hold every other place to that: the IOC's conversions, the defaults, the
processors' contract (pvdb/processors.py), the node agents' spec, the backends'
limits, the Bluesky device. No EPICS process is started.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from dataclasses import fields, replace
from pathlib import Path

import pytest

from ptychoedge.iocs.instances import InstanceSpec
from ptychoedge.iocs.settings import (
    Settings,
    record_value,
    record_values,
    setting_value,
    settings_from,
)
from ptychoedge.pvdb import pipeline
from ptychoedge.pvdb.processors import (
    COLLECTOR_PROCESSOR,
    CONFIG_ARGS,
    INSTANCE_PROCESSOR,
    RUNTIME_ARGS,
    CollectorArgs,
    CollectorStatus,
    InstanceArgs,
    InstanceCounts,
    InstanceStatus,
    ModelConfig,
    wire_name,
)
from ptychoedge.pvdb.spec import Kind, PvSpec

CONFIG_FIELDS = {item.name for item in fields(ModelConfig)}


def disagreements(knobs: tuple[PvSpec, ...]) -> list[str]:
    """Where the knobs and the programs' settings disagree ([] when they agree)."""
    found = []
    settings = set(Settings().values())
    named = [spec.setting for spec in knobs]
    found += [f"{spec.name} sets no field of Settings or ModelConfig" for spec in knobs
              if spec.setting not in settings]
    found += [f"field {name} has no knob" for name in sorted(settings - set(named))]
    found += [f"{name} set by two knobs" for name in set(named) if named.count(name) > 1]
    return found


def test_every_knob_sets_one_field_and_every_field_has_its_knob():
    assert disagreements(pipeline.KNOBS) == []


def test_a_knob_added_only_to_the_spec_is_caught():
    extra = PvSpec("Extra", Kind.INT, "A knob nothing reads", readback=True, setting="extra")
    assert disagreements((*pipeline.KNOBS, extra)) == [
        "Extra sets no field of Settings or ModelConfig"]
    unnamed = replace(pipeline.knob("batch_size"), setting="")
    found = disagreements(tuple(unnamed if s.name == "BatchSize" else s for s in pipeline.KNOBS))
    assert "field batch_size has no knob" in found


def test_the_settings_start_at_the_knobs_initial_values():
    assert record_values(Settings()) == {spec.name: spec.initial for spec in pipeline.KNOBS}
    assert settings_from({spec.name: spec.initial for spec in pipeline.KNOBS}) == Settings()


@pytest.mark.parametrize("spec", pipeline.KNOBS, ids=lambda spec: spec.name)
def test_a_record_value_and_its_setting_convert_both_ways(spec):
    samples = (range(len(spec.choices)) if spec.kind is Kind.ENUM
               else [spec.low, spec.high] if spec.low is not None
               else ["SIM9:Pva1:Image"])
    for sample in samples:
        value = setting_value(spec, sample)
        assert isinstance(value, type(Settings().values()[spec.setting]))
        assert record_value(spec, value) == sample


def test_the_processors_change_every_configuration_knob_live():
    assert set(CONFIG_ARGS) == {wire_name(name) for name in CONFIG_FIELDS}
    assert set(CONFIG_ARGS) <= set(RUNTIME_ARGS)
    assert ModelConfig.from_args(ModelConfig().to_args()) == ModelConfig()
    args = InstanceArgs(ModelConfig(batch_size=16), "/models", first_delay=1.0)
    assert InstanceArgs.from_args(args.to_args()) == args
    assert CollectorArgs.from_args(CollectorArgs().to_args()) == CollectorArgs()
    # pvapy adds arguments of its own; a field's Python name is not its wire name
    pvapys = {"inputChannel": "SIM1:Pva1:Image", "processorId": 1, "batch_size": 4}
    assert InstanceArgs.from_args(pvapys) == InstanceArgs()


BATCH = pipeline.knob("batch_size")


@pytest.mark.parametrize(("batch", "refused"), [
    (BATCH.low - 1, True), (BATCH.low, False), (BATCH.high, False), (BATCH.high + 1, True),
    (8.0, True), (True, True)])
def test_the_configuration_takes_the_batch_sizes_the_knob_takes(batch, refused):
    assert (ModelConfig(batch_size=batch).problem() is not None) == refused
    if isinstance(batch, int) and not isinstance(batch, bool):
        assert (BATCH.check(batch) is not None) == refused


@pytest.mark.parametrize("setting", ["backend", "precision"])
def test_the_configuration_takes_exactly_the_knobs_choices(setting):
    for choice in pipeline.knob(setting).choices:
        assert ModelConfig(**{setting: choice}).problem() is None
    assert ModelConfig(**{setting: "no-such"}).problem() is not None


def test_a_node_agent_takes_the_specs_the_knobs_allow():
    spec = InstanceSpec("EDGE1:", "SIM1:Pva1:Image", count=1,
                        config=ModelConfig(batch_size=BATCH.high))
    assert InstanceSpec.from_json(spec.to_json()) == spec
    too_big = json.loads(spec.to_json())
    too_big["config"]["batch_size"] = BATCH.high + 1
    with pytest.raises(ValueError, match="BatchSize"):
        InstanceSpec.from_json(json.dumps(too_big))
    no_backend = json.loads(spec.to_json())
    no_backend["config"]["backend"] = "no-such"
    with pytest.raises(ValueError, match="Backend"):
        InstanceSpec.from_json(json.dumps(no_backend))


@pytest.mark.integration  # importing the runtimes starts a process (`uname -p`)
def test_the_backends_run_every_choice_and_batch_the_knobs_allow():
    from ptychoedge.inference import backends

    assert set(backends.BACKENDS) == set(pipeline.BACKENDS)
    assert set(backends.PRECISIONS) == set(pipeline.PRECISIONS)
    assert BATCH.high <= backends.TENSORRT_MAX_BATCH


def test_an_instance_status_read_back_is_the_status_published():
    status = InstanceStatus(
        InstanceCounts(published=7, rate=2.5, latency_p99=0.01, queued=3, errors=2),
        {"rank": 1, "decode": 1}, ModelConfig(backend="torch", batch_size=4), 5, "why")
    stats = status.to_stats()
    assert set(InstanceStatus.pva_types()) == set(stats)
    read = InstanceStatus.from_stats(stats)
    assert read.counts == status.counts and read.config == status.config
    assert read.errors_by_kind["rank"] == 1 and read.errors_by_kind["too_small"] == 0
    assert (read.answered, read.config_error) == (5, "why")
    renamed = {("batch_size" if k == "batchSize" else k): v for k, v in stats.items()}
    with pytest.raises(KeyError):
        InstanceStatus.from_stats(renamed)


def test_a_collector_status_read_back_is_the_status_published():
    status = CollectorStatus(placed=9, scans=2, errors=1, patches=4, received=10, model="m")
    assert set(CollectorStatus.pva_types()) == set(status.to_stats())
    assert CollectorStatus.from_stats(status.to_stats()) == status


@pytest.mark.parametrize("path", [INSTANCE_PROCESSOR, COLLECTOR_PROCESSOR])
def test_the_processors_are_named_by_a_class_their_module_defines(path):
    module, _, name = path.rpartition(".")
    found = importlib.util.find_spec(module)  # finding imports no pvaccess here
    assert found is not None and found.origin is not None
    tree = ast.parse(Path(found.origin).read_text())
    assert name in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def test_the_device_has_a_signal_for_every_knob():
    from ptychoedge.scans.devices import Pipeline, attribute_name

    device = Pipeline("EDGE1:")
    for spec in pipeline.KNOBS:
        attribute = "run" if spec.name == "Run" else attribute_name(spec.name)
        source = getattr(device, attribute).source  # the readback's, for a setting
        assert source.endswith(f"EDGE1:{spec.readback_name}"), spec.name


def test_target_rate_refuses_what_is_no_rate():
    target = pipeline.knob("target_rate")
    assert target.check(math.nan) and target.check(-1.0) and target.check(math.inf)
    assert target.check(target.high) is None
