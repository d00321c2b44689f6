"""The PV contract: the spec is consistent, and the README's table is the spec's."""

from pathlib import Path

import pytest

from ptychoedge.pvdb import detector, pipeline, table
from ptychoedge.pvdb.spec import Kind, all_names

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
    assert pipeline.IMAGES == ("Recon:Amplitude", "Recon:Phase", "Mosaic:Amplitude",
                               "Mosaic:Phase")


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
