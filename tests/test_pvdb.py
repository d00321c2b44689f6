"""The PV contract: the spec is consistent, and the README's table is the spec's."""

from pathlib import Path

import pytest

from ptychoedge.pvdb import detector, pipeline, table
from ptychoedge.pvdb.spec import MAX_STRING_LENGTH, Kind, PvSpec, all_names

README = Path(__file__).parents[1] / "README.md"

# areaDetector names that DESIGN.md's PV contract fixes for the detector
CONTRACT = [
    "cam1:Acquire", "cam1:Acquire_RBV", "cam1:AcquireTime", "cam1:AcquireTime_RBV",
    "cam1:AcquirePeriod", "cam1:AcquirePeriod_RBV", "cam1:NumImages", "cam1:NumImages_RBV",
    "cam1:ImageMode", "cam1:ImageMode_RBV", "cam1:ArrayCounter", "cam1:ArrayCounter_RBV",
    "cam1:ArrayRate_RBV", "cam1:DetectorState_RBV", "cam1:ArraySizeX_RBV",
    "cam1:ArraySizeY_RBV", "cam1:DataType_RBV", "cam1:ColorMode_RBV", "cam1:Manufacturer_RBV",
    "cam1:Model_RBV",
]


def test_detector_serves_the_contract():
    names = all_names(detector.PVS)
    assert sorted(set(CONTRACT) - set(names)) == []
    assert len(names) == len(set(names))


# DESIGN.md's contract for the pipeline IOC
PIPELINE_CONTRACT = [
    *(f"{knob}{suffix}" for knob in ("Run", "InputChannel", "Nodes", "InstancesPerNode",
                                     "BatchSize", "Backend", "Precision", "Model", "AutoScale",
                                     "TargetRate", "MaxInstances") for suffix in ("", "_RBV")),
    "ResetStats", "InputRate_RBV", "ProcessedRate_RBV", "FramesProcessed_RBV",
    "FramesMissed_RBV", "MissedRate_RBV", "LatencyP50_RBV", "LatencyP99_RBV",
    "InferenceTime_RBV", "Instances_RBV", "InstanceRates_RBV", "State_RBV", "Message_RBV",
]


def test_pipeline_serves_the_contract():
    names = all_names(pipeline.PVS)
    assert sorted(set(PIPELINE_CONTRACT) - set(names)) == []
    assert len(names) == len(set(names))


def test_no_record_takes_the_name_of_an_image():
    """The images are served by pvapy under the IOC's prefix, beside its records: a record
    of the same name would be a second server answering for it."""
    images = pipeline.IMAGES + pipeline.REFINED_IMAGES
    assert len(set(images)) == len(images) == 6
    assert set(images).isdisjoint(all_names(pipeline.PVS))


def test_readme_table_is_generated_from_the_spec():
    text = README.read_text()
    start = text.index("<!-- pv-table -->") + len("<!-- pv-table -->")
    end = text.index("<!-- /pv-table -->")
    assert text[start:end].strip() == table.markdown()


@pytest.mark.parametrize("spec", [s for s in detector.SETTINGS + pipeline.KNOBS
                                  if s.kind is not Kind.STRING],
                         ids=lambda s: s.name)
def test_initial_values_are_acceptable(spec):
    assert spec.check(spec.initial) is None


def test_check_names_the_pv_and_the_limit():
    period = next(s for s in detector.SETTINGS if s.name == "cam1:AcquirePeriod")
    reason = period.check(-1.0)
    assert "AcquirePeriod" in reason and "minimum" in reason
    assert period.check(0.001) is None
    mode = next(s for s in detector.SETTINGS if s.name == "cam1:ImageMode")
    assert mode.check(3) is not None and mode.check(2) is None


NUMBERS = [s for s in detector.SETTINGS + pipeline.KNOBS if s.kind in (Kind.FLOAT, Kind.INT)]


@pytest.mark.parametrize("spec", NUMBERS, ids=lambda s: s.name)
def test_nan_is_refused_by_every_number(spec):
    """NaN passes every comparison with a limit: refused by a check of its own."""
    assert spec.check(float("nan")) == f"{spec.name}: NaN refused"


def test_a_number_with_no_limits_still_refuses_nan():
    free = PvSpec("Free", Kind.FLOAT, "no limits")
    assert free.check(1e300) is None and free.check(-1e300) is None
    assert free.check(float("nan")) is not None


def test_limits_are_inclusive_and_named():
    spec = PvSpec("Gain", Kind.FLOAT, "a gain", low=1.0, high=4.0, units="x")
    assert spec.check(1.0) is None and spec.check(4.0) is None
    assert spec.check(0.999) == "Gain: 0.999 refused, below the minimum 1.0 x"
    assert spec.check(4.001) == "Gain: 4.001 refused, above the maximum 4.0 x"
    assert spec.check(float("inf")) is not None and spec.check(float("-inf")) is not None


@pytest.mark.parametrize("name", ["InputChannel", "Model"])
def test_a_knob_that_must_name_something_refuses_an_empty_value(name):
    spec = next(s for s in pipeline.KNOBS if s.name == name)
    assert not spec.allow_empty
    for empty in ("", "   ", "\t"):
        assert spec.check(empty) == f"{name}: an empty value refused", repr(empty)
    assert spec.check("X") is None


def test_a_string_that_may_be_empty_takes_an_empty_value():
    replay = next(s for s in detector.SETTINGS if s.name == "cam1:ReplayFile")
    assert replay.allow_empty
    assert replay.check("") is None  # no replay file
    assert PvSpec("S", Kind.STRING, "s", allow_empty=False).check("") is not None
    assert PvSpec("S", Kind.STRING, "s").check("") is None


def test_strings_longer_than_a_record_holds_are_refused():
    spec = PvSpec("S", Kind.STRING, "s")
    assert spec.check("x" * MAX_STRING_LENGTH) is None
    assert "256 characters refused" in spec.check("x" * (MAX_STRING_LENGTH + 1))


def test_an_enum_takes_only_the_index_of_a_choice():
    mode = next(s for s in detector.SETTINGS if s.name == "cam1:ImageMode")
    assert [mode.check(i) for i in range(len(mode.choices))] == [None] * len(mode.choices)
    assert mode.check(-1) is not None and mode.check(len(mode.choices)) is not None
