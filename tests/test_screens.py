"""The Phoebus screens: well formed, generated from the spec, and every PV they name is served."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import epics
import pytest
from conftest import Processes, ptychoedge, pva_ready, start_ioc, start_sim, wait_until
from p4p.client.thread import Context

from ptychoedge.pvdb import detector, pipeline, screens, stage
from ptychoedge.pvdb.spec import Kind, all_names

STARTUP = 150  # s for the pipeline's first instance and collector on two shared cores

# Widget type -> properties it must have (beyond name and geometry)
REQUIRED = {
    "label": ("text",), "textupdate": ("pv_name",), "textentry": ("pv_name",),
    "spinner": ("pv_name",), "combo": ("pv_name",), "led": ("pv_name",),
    "image": ("pv_name",), "action_button": ("actions",), "stripchart": ("traces", "y_axes"),
    "xyplot": ("traces", "y_axes", "x_axis"), "group": (),
}
GEOMETRY = ("name", "x", "y", "width", "height")
CONTROLS = {Kind.ENUM: "combo", Kind.INT: "spinner", Kind.FLOAT: "textentry",
            Kind.STRING: "textentry"}


def spec_pvs() -> set[str]:
    """Every PV name the spec serves, with macros and protocol as a screen names it."""
    names = {f"$(P){name}" for name in all_names(pipeline.PVS)}
    names |= {f"pva://$(P){image}" for image in pipeline.IMAGES + pipeline.REFINED_IMAGES}
    names |= {f"$(D){name}" for name in all_names(detector.PVS)}
    names.add(f"pva://$(D){detector.IMAGE}")
    names |= {f"$(D){motor.name}{field}" for motor in stage.MOTORS
              for field in screens.MOTOR_FIELDS}
    return names


def load(name: str) -> ET.Element:
    return ET.parse(screens.opi_dir() / name).getroot()


def widgets(root: ET.Element) -> list[ET.Element]:
    return list(root.iter("widget"))


def named_pvs(root: ET.Element) -> set[str]:
    """Every PV a screen connects to: widgets' pv_name, traces' PVs, actions' PVs."""
    found = set()
    for widget in widgets(root):
        own = widget.findtext("pv_name") or ""
        if own:
            found.add(own)
        for trace in widget.findall("traces/trace"):
            found |= {trace.findtext(tag) for tag in ("x_pv", "y_pv", "err_pv")} - {None, ""}
        for action in widget.findall("actions/action"):
            pv = action.findtext("pv_name")
            if pv:
                found.add(pv.replace("$(pv_name)", own))
    return found


def unknown_pvs(root: ET.Element) -> set[str]:
    return named_pvs(root) - spec_pvs()


@pytest.mark.parametrize("name", screens.SCREENS)
def test_screens_are_well_formed(name):
    root = load(name)
    assert root.tag == "display" and root.get("version")
    macros = root.find("macros")
    assert {child.tag: child.text for child in macros} == {"P": "EDGE1:", "D": "SIM1:"}
    found = widgets(root)
    assert len(found) > 40
    for widget in found:
        kind = widget.get("type")
        assert kind in REQUIRED, kind
        assert widget.get("version")
        for tag in GEOMETRY + REQUIRED[kind]:
            assert widget.find(tag) is not None, f"{kind} {widget.findtext('name')}: no {tag}"
        assert int(widget.findtext("width")) > 0 and int(widget.findtext("height")) > 0
        for action in widget.findall("actions/action"):
            if action.get("type") == "write_pv":
                assert action.findtext("pv_name") and action.findtext("value") is not None
            else:
                assert action.get("type") == "open_display"
                assert (screens.opi_dir() / action.findtext("file")).is_file()
                assert {m.tag for m in action.find("macros")} == {"P", "D"}
        for trace in widget.findall("traces/trace"):
            assert trace.findtext("y_pv")


def test_screens_are_what_the_spec_generates():
    for name, text in screens.generate().items():
        assert (screens.opi_dir() / name).read_text() == text, (
            f"{name} is out of date: python -m ptychoedge.pvdb.screens")
    assert screens.main(["--check", "--out", str(screens.opi_dir())]) == 0


@pytest.mark.parametrize("name", screens.SCREENS)
def test_screens_name_only_pvs_of_the_spec(name):
    assert unknown_pvs(load(name)) == set()


def test_a_pv_outside_the_spec_is_caught():
    root = load(screens.MAIN)
    entry = next(w for w in widgets(root) if w.findtext("pv_name") == "$(P)BatchSize")
    entry.find("pv_name").text = "$(P)BatchSizes"
    assert unknown_pvs(root) == {"$(P)BatchSizes"}


def test_main_screen_shows_the_pipeline_beside_the_detector():
    root = load(screens.MAIN)
    by_type: dict[str, list[ET.Element]] = {}
    for widget in widgets(root):
        by_type.setdefault(widget.get("type"), []).append(widget)
    images = {w.findtext("pv_name") for w in by_type["image"]}
    assert images == {"pva://$(D)Pva1:Image"} | {
        f"pva://$(P){i}" for i in pipeline.IMAGES + pipeline.REFINED_IMAGES}
    (chart,) = by_type["stripchart"]
    assert {t.findtext("y_pv") for t in chart.findall("traces/trace")} == {
        "$(P)InputRate_RBV", "$(P)ProcessedRate_RBV", "$(P)FramesMissed_RBV"}
    (plot,) = by_type["xyplot"]
    assert [t.findtext("y_pv") for t in plot.findall("traces/trace")] == ["$(P)InstanceRates_RBV"]
    controls = {w.findtext("pv_name"): w.get("type") for w in widgets(root)}
    for spec in pipeline.KNOBS:
        assert controls[f"$(P){spec.readback_name}"] == "textupdate"
        if spec.name != "Run":
            assert controls[f"$(P){spec.name}"] == CONTROLS[spec.kind], spec.name
    run_values = {a.findtext("value") for w in by_type["action_button"]
                  if w.findtext("pv_name") == "$(P)Run" for a in w.findall("actions/action")}
    assert run_values == {"0", "1"}  # Stop and Run buttons
    for name in ("State_RBV", "Message_RBV", "FramesMissed_RBV", "InputRate_RBV"):
        assert controls[f"$(P){name}"] == "textupdate"


def test_detector_screen_has_every_cam1_record():
    root = load(screens.DETECTOR)
    controls = {w.findtext("pv_name"): w.get("type") for w in widgets(root)}
    for spec in detector.SETTINGS:
        assert controls[f"$(D){spec.name}"] == CONTROLS[spec.kind], spec.name
        assert controls[f"$(D){spec.readback_name}"] == "textupdate"
    for spec in detector.STATUS_PVS:
        assert controls[f"$(D){spec.name}"] == "textupdate"
    assert controls[f"pva://$(D){detector.IMAGE}"] == "image"
    for motor in stage.MOTORS:
        assert controls[f"$(D){motor.name}"] == "textentry"


@pytest.mark.integration
def test_screens_command_prints_where_and_how_to_open():
    result = subprocess.run(ptychoedge("screens", "--prefix", "X1:", "--beamline-prefix", "Y1:"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    folder = screens.opi_dir()
    assert f"screens: {folder}" in result.stdout
    assert f"phoebus -resource 'file:{folder / screens.MAIN}?P=X1:&D=Y1:'" in result.stdout
    default = subprocess.run(ptychoedge("screens"), capture_output=True, text=True, timeout=60)
    assert "main.bob?P=EDGE1:&D=SIM1:'" in default.stdout


@pytest.mark.integration
@pytest.mark.timeout(STARTUP + 120)
def test_every_pv_the_screens_name_answers(tmp_path):
    d = f"S{uuid.uuid4().hex[:8]}:"
    p = d.replace(":", "E:")
    processes = Processes(tmp_path)
    ctx = Context("pva", nt=False)
    ca: list[epics.PV] = []
    try:
        start_sim(processes.start, d, tmp_path)
        ioc = start_ioc(processes.start, ctx, p, d + "Pva1:Image", tmp_path / "state")
        ctx.put(p + "Run", "Run", timeout=5)  # the collector serves the images while running
        wait_until(lambda: ctx.get(p + "State_RBV", timeout=5).value.index
                   == pipeline.STATES.index("Running"), STARTUP, "the pipeline running", ioc)

        names = set().union(*(named_pvs(load(name)) for name in screens.SCREENS))
        resolved = {re.sub(r"\$\((\w)\)", lambda m: {"P": p, "D": d}[m.group(1)], n)
                    for n in names}
        over_pva = sorted(n.removeprefix("pva://") for n in resolved if n.startswith("pva://"))
        over_ca = sorted(n for n in resolved if not n.startswith("pva://"))
        assert len(over_pva) == 7 and len(over_ca) > 60
        for name in over_pva:
            wait_until(pva_ready(ctx, name), 30, f"{name} over PVA", ioc)
        # All searched for at once; each then read. A read, not `PV.connected`: pyepics'
        # connection callbacks stop if aioca's libca was loaded first and never used.
        ca = [epics.PV(name, auto_monitor=False) for name in over_ca]
        missing = [pv.pvname for pv in ca if pv.get(timeout=10, use_monitor=False) is None]
        assert missing == []
    finally:
        for pv in ca:
            pv.disconnect()
        ctx.close()
        processes.stop()


def test_generator_writes_the_screens(tmp_path: Path):
    assert screens.main(["--out", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(screens.SCREENS)
    assert screens.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / screens.MAIN).write_text("<display/>")
    assert screens.main(["--check", "--out", str(tmp_path)]) == 1
