"""Phoebus display builder screens (`.bob`), generated from the PV spec.

Every PV a screen names comes from `pvdb/` (the pipeline's, the detector's and
the stage's specs), and every control matches its PV's kind: a combo box for an
enum, a spinner for an integer, a text entry for a float or a string, a text
update for a readback. So the screens cannot drift from the IOCs:

    python -m ptychoedge.pvdb.screens          # rewrites opi/*.bob
    python -m ptychoedge.pvdb.screens --check  # exit 1 if opi/ is not what the spec gives

Macros: `$(P)` the pipeline's prefix (default EDGE1:), `$(D)` the beamline's
(default SIM1:). Images are NTNDArrays over pvAccess (`pva://`); everything else
is Channel Access, Phoebus's default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree as ET

from ptychoedge.pvdb import detector, pipeline, stage
from ptychoedge.pvdb.spec import Kind, PvSpec, find

MACROS = {"P": "EDGE1:", "D": "SIM1:"}
MAIN = "main.bob"
DETECTOR = "detector.bob"
SCREENS = (MAIN, DETECTOR)

# Motor record fields the screens use, with what each shows
MOTOR_FIELDS = {"": "setpoint (VAL)", ".RBV": "readback", ".DMOV": "done moving",
                ".STOP": "stop", ".EGU": "units"}

# Widget type -> the version Phoebus writes for it (Phoebus reads older ones too)
VERSIONS = {
    "label": "2.0.0", "textupdate": "2.0.0", "textentry": "3.0.0", "spinner": "2.0.0",
    "combo": "2.0.0", "action_button": "3.0.0", "led": "2.0.0", "group": "3.0.0",
    "image": "2.0.0", "stripchart": "2.1.0", "xyplot": "3.0.0",
}
FORMAT_DEFAULT, FORMAT_DECIMAL, FORMAT_STRING = 0, 1, 6  # Phoebus FormatOption indices
ROW = 26  # px per control row
COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0), "green": (0, 160, 0),
           "orange": (255, 128, 0)}


def opi_dir() -> Path:
    """Where the installed screens are (the `ptychoedge.opi` package data)."""
    from importlib import resources

    return Path(str(resources.files("ptychoedge.opi")))


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)
    return element


def _colour(parent: ET.Element, tag: str, name: str) -> None:
    red, green, blue = COLOURS[name]
    ET.SubElement(ET.SubElement(parent, tag), "color", red=str(red), green=str(green),
                  blue=str(blue))


class Screen:
    """One display; widgets go into the display or into the group opened last."""

    def __init__(self, name: str, width: int, height: int):
        self.root = ET.Element("display", version="2.0.0")
        _text(self.root, "name", name)
        macros = ET.SubElement(self.root, "macros")
        for macro, default in MACROS.items():
            _text(macros, macro, default)
        _text(self.root, "width", width)
        _text(self.root, "height", height)
        self._parent = self.root
        self._count = 0

    def widget(self, kind: str, x: int, y: int, width: int, height: int,
               name: str | None = None, **properties: object) -> ET.Element:
        """Add a widget of `kind` at (x, y), its properties as elements of its own."""
        self._count += 1
        element = ET.SubElement(self._parent, "widget", type=kind, version=VERSIONS[kind])
        _text(element, "name", name or f"{kind}_{self._count}")
        for tag, value in (("x", x), ("y", y), ("width", width), ("height", height)):
            _text(element, tag, value)
        for tag, value in properties.items():
            if value is not None:
                _text(element, tag, value)
        return element

    @contextmanager
    def group(self, name: str, x: int, y: int, width: int, height: int) -> Iterator[None]:
        """Add a group box; widgets added inside the `with` block go into it."""
        outer = self._parent
        self._parent = self.widget("group", x, y, width, height, name=name)
        try:
            yield
        finally:
            self._parent = outer

    # -- widgets ------------------------------------------------------------------------------

    def label(self, text: str, x: int, y: int, width: int = 150, tooltip: str = "") -> None:
        """Add a text label."""
        self.widget("label", x, y, width, 20, text=text, tooltip=tooltip or None)

    def readback(self, pv: str, x: int, y: int, width: int = 110,
                 spec: PvSpec | None = None) -> None:
        """Add a text update of `pv`, alarm-sensitive, with units when `spec` has them."""
        string = spec is not None and spec.kind is Kind.STRING
        self.widget("textupdate", x, y, width, 20, pv_name=pv,
                    format=FORMAT_STRING if string else FORMAT_DEFAULT,
                    show_units=bool(spec and spec.units),
                    precision=spec.precision if spec and spec.kind is Kind.FLOAT else None,
                    border_alarm_sensitive=True)

    def control(self, pv: str, spec: PvSpec, x: int, y: int, width: int = 120) -> None:
        """The control that fits the PV's kind."""
        if spec.kind is Kind.ENUM:
            self.widget("combo", x, y, width, 24, pv_name=pv, items_from_pv=True)
        elif spec.kind is Kind.INT:
            self.widget("spinner", x, y, width, 24, pv_name=pv, format=FORMAT_DECIMAL,
                        precision=0, increment=1, limits_from_pv=True)
        elif spec.kind is Kind.FLOAT:
            self.widget("textentry", x, y, width, 24, pv_name=pv, format=FORMAT_DEFAULT,
                        show_units=bool(spec.units))
        elif spec.kind is Kind.STRING:
            self.widget("textentry", x, y, width, 24, pv_name=pv, format=FORMAT_STRING)
        else:
            raise ValueError(f"{spec.name}: no control for {spec.kind}")

    def write_button(self, pv: str, value: object, text: str, x: int, y: int,
                     width: int = 80, colour: str | None = None) -> None:
        """Add a button that writes `value` to `pv`."""
        button = self.widget("action_button", x, y, width, 26, text=text, pv_name=pv)
        actions = ET.SubElement(button, "actions")
        action = ET.SubElement(actions, "action", type="write_pv")
        _text(action, "pv_name", "$(pv_name)")
        _text(action, "value", value)
        _text(action, "description", text)
        if colour:
            _colour(button, "background_color", colour)

    def open_button(self, file: str, text: str, x: int, y: int, width: int = 160) -> None:
        """Add a button that opens the screen `file`."""
        button = self.widget("action_button", x, y, width, 26, text=text)
        action = ET.SubElement(ET.SubElement(button, "actions"), "action", type="open_display")
        _text(action, "file", file)
        _text(action, "target", "tab")
        _text(action, "description", text)
        macros = ET.SubElement(action, "macros")
        for macro in MACROS:
            _text(macros, macro, f"$({macro})")

    def led(self, pv: str, x: int, y: int) -> None:
        """Add an LED showing `pv`."""
        self.widget("led", x, y, 20, 20, pv_name=pv)

    def image(self, pv: str, title: str, x: int, y: int, size: int,
              colour_map: str = "VIRIDIS") -> None:
        """Add an image widget showing the NTNDArray `pv`."""
        widget = self.widget("image", x, y, size, size, name=title, pv_name=pv,
                             autoscale=True)
        _text(ET.SubElement(widget, "color_map"), "name", colour_map)
        bar = ET.SubElement(widget, "color_bar")
        _text(bar, "visible", True)
        _text(bar, "bar_size", 30)
        for axis in ("x_axis", "y_axis"):
            element = ET.SubElement(widget, axis)
            _text(element, "visible", False)
            _text(element, "title", "")
        _text(widget, "tooltip", f"{title}: {pv}")

    def stripchart(self, title: str, traces: list[tuple[str, str, int, str]],
                   axes: list[str], x: int, y: int, width: int, height: int) -> None:
        """`traces`: (legend, PV, axis index, colour); `axes`: the y axes' titles."""
        widget = self.widget("stripchart", x, y, width, height, name=title, title=title,
                             show_toolbar=False, show_legend=True, time_range="2 minutes")
        y_axes = ET.SubElement(widget, "y_axes")
        for axis_title in axes:
            axis = ET.SubElement(y_axes, "y_axis")
            for tag, value in (("title", axis_title), ("autoscale", True),
                               ("log_scale", False), ("minimum", 0.0), ("maximum", 100.0),
                               ("show_grid", True), ("visible", True)):
                _text(axis, tag, value)
        elements = ET.SubElement(widget, "traces")
        for legend, pv, axis_index, colour in traces:
            trace = ET.SubElement(elements, "trace")
            _text(trace, "name", legend)
            _text(trace, "y_pv", pv)
            _text(trace, "axis", axis_index)
            _text(trace, "trace_type", 2)  # line
            _colour(trace, "color", colour)
            for tag, value in (("line_width", 2), ("point_type", 0), ("point_size", 10),
                               ("visible", True)):
                _text(trace, tag, value)

    def waveform_plot(self, title: str, pv: str, y_title: str, x: int, y: int, width: int,
                      height: int) -> None:
        """Add a plot of the waveform `pv` against its index."""
        widget = self.widget("xyplot", x, y, width, height, name=title, title=title,
                             show_legend=False)
        x_axis = ET.SubElement(widget, "x_axis")
        for tag, value in (("title", "instance"), ("autoscale", True), ("log_scale", False),
                           ("minimum", 0.0), ("maximum", 8.0), ("show_grid", False),
                           ("visible", True)):
            _text(x_axis, tag, value)
        y_axis = ET.SubElement(ET.SubElement(widget, "y_axes"), "y_axis")
        for tag, value in (("title", y_title), ("autoscale", True), ("log_scale", False),
                           ("minimum", 0.0), ("maximum", 100.0), ("show_grid", True),
                           ("visible", True)):
            _text(y_axis, tag, value)
        trace = ET.SubElement(ET.SubElement(widget, "traces"), "trace")
        for tag, value in (("name", title), ("x_pv", ""), ("y_pv", pv), ("err_pv", ""),
                           ("axis", 0), ("trace_type", 5)):  # 5: bars
            _text(trace, tag, value)
        _colour(trace, "color", "blue")
        for tag, value in (("line_width", 8), ("point_type", 0), ("point_size", 10),
                           ("visible", True)):
            _text(trace, tag, value)

    # -- rows from the spec ---------------------------------------------------------------------

    def setting_row(self, prefix: str, spec: PvSpec, x: int, y: int, label_width: int = 130,
                    control_width: int = 120) -> None:
        """Label, control and (for a setting with one) the `_RBV` readback."""
        self.label(spec.name.split(":")[-1], x, y + 2, label_width, tooltip=spec.description)
        self.control(prefix + spec.name, spec, x + label_width, y, control_width)
        if spec.readback:
            self.readback(prefix + spec.readback_name, x + label_width + control_width + 8,
                          y + 2, 120, spec)

    def status_row(self, prefix: str, spec: PvSpec, x: int, y: int, label_width: int = 150,
                   width: int = 120) -> None:
        """Add a label and the readback of the status PV `spec`."""
        self.label(spec.name.split(":")[-1].removesuffix("_RBV"), x, y, label_width,
                   tooltip=spec.description)
        self.readback(prefix + spec.name, x + label_width, y, width, spec)

    def motor_row(self, prefix: str, motor: stage.MotorSpec, x: int, y: int) -> None:
        """Add a motor's label, set point, readback, moving LED and stop button."""
        pv = prefix + motor.name
        self.label(f"{motor.name} ({motor.axis})", x, y + 2, 70, tooltip=motor.description)
        self.widget("textentry", x + 70, y, 90, 24, pv_name=pv, format=FORMAT_DEFAULT,
                    show_units=True)
        self.readback(pv + ".RBV", x + 168, y + 2, 100)
        self.led(pv + ".DMOV", x + 276, y + 2)
        self.write_button(pv + ".STOP", 1, "Stop", x + 304, y, 60)

    def xml(self) -> str:
        """The screen as the text of a `.bob` file."""
        ET.indent(self.root, "  ")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
            self.root, encoding="unicode") + "\n"


def _title(screen: Screen, text: str, width: int) -> None:
    screen.widget("label", 10, 6, width, 32, name="Title", text=text)


def main_screen() -> Screen:
    """The pipeline beside the detector: images, knobs, rates, state."""
    p, d = "$(P)", "$(D)"
    image = 300
    screen = Screen("ptychoedge: pipeline", 1640, 1430)
    _title(screen, "ptychoedge: real-time PtychoNN on $(D)Pva1:Image into $(P)", 900)

    # Images: the frame beside the latest patch, the stitched sample and the refined one
    titles = {"Recon:Amplitude": "Latest amplitude", "Recon:Phase": "Latest phase",
              "Mosaic:Amplitude": "Mosaic amplitude", "Mosaic:Phase": "Mosaic phase",
              "Refined:Amplitude": "Refined amplitude", "Refined:Phase": "Refined phase"}
    panels = [(f"pva://{d}{detector.IMAGE}", "Detector frame", "GRAY")] + [
        (f"pva://{p}{name}", titles[name], "VIRIDIS")
        for name in pipeline.IMAGES + pipeline.REFINED_IMAGES]
    with screen.group("Images", 10, 44, 3 * (image + 20) + 10, 3 * (image + 30) + 30):
        for index, (pv, title, colour_map) in enumerate(panels):
            column, row = (index, 0) if index < 3 else ((index - 3) % 2 + 1, (index - 1) // 2)
            left, top = 5 + column * (image + 20), 5 + row * (image + 30)
            screen.label(title, left, top, image)
            screen.image(pv, title, left, top + 22, image, colour_map)
        # Under the frame: whether the frames fit the model (the residual guard), so a
        # beautiful mosaic of frames the model does not know is never shown unflagged
        top = 5 + image + 30
        screen.label("Fit of the frames to the model", 5, top, image)
        fit = ("Residual_RBV", "Variation_RBV", "Explained_RBV", "Agreement_RBV",
               "State_RBV")
        for row, name in enumerate(fit):
            spec = find(pipeline.STATUS_PVS, name)
            screen.status_row(p, spec, 5, top + 30 + row * ROW, 110, 180)
        for row, text in enumerate(("An alarm: frames unlike the model's training,",
                                    "images that do not tell the frames apart,",
                                    "or neighbouring images that disagree")):
            screen.label(text, 5, top + 36 + len(fit) * ROW + row * 20, image)
        # Beside the refined images: the button that makes them, and how far it got
        top = 5 + 2 * (image + 30)
        screen.label("The network's image, refined through the physics", 5, top, image)
        screen.write_button(p + pipeline.REFINE.name, 1, "Refine the kept frames", 5,
                            top + 30, 200)
        for row, name in enumerate(("RefineState_RBV", "RefineProgress_RBV",
                                    "RefineError_RBV", "RefinedResolution_RBV",
                                    "RefinedInstrument_RBV")):
            spec = find(pipeline.STATUS_PVS, name)
            screen.status_row(p, spec, 5, top + 30 + (row + 1) * ROW + 6, 110, 180)

    # Knobs
    left = 3 * (image + 20) + 30
    knobs_height = ROW * (len(pipeline.KNOBS) + 2) + 40
    with screen.group("Pipeline", left, 44, 650, knobs_height):
        screen.write_button(p + "Run", 1, "Run", 5, 0, 90, "green")
        screen.write_button(p + "Run", 0, "Stop", 100, 0, 90, "red")
        screen.readback(p + find(pipeline.KNOBS, "Run").readback_name, 200, 3, 80)
        screen.write_button(p + pipeline.RESET_STATS.name, 1, "Reset statistics", 300, 0, 150)
        screen.write_button(p + pipeline.ADAPT.name, 1, "Adapt the model", 460, 0, 150)
        for row, spec in enumerate(s for s in pipeline.KNOBS if s.name != "Run"):
            width = 220 if spec.kind is Kind.STRING else 120
            screen.setting_row(p, spec, 5, 34 + row * ROW, control_width=width)

    # Status
    status_top = 44 + knobs_height + 10
    shown = [s for s in pipeline.STATUS_PVS
             if s.name not in ("InstanceRates_RBV", "Message_RBV")]
    half = (len(shown) + 1) // 2
    with screen.group("Status", left, status_top, 650, ROW * (half + 1) + 50):
        for index, spec in enumerate(shown):
            column, row = divmod(index, half)
            screen.status_row(p, spec, 5 + column * 320, row * ROW, 170, 130)
        message = find(pipeline.STATUS_PVS, "Message_RBV")
        screen.label("Message", 5, half * ROW + 4, 80, tooltip=message.description)
        screen.readback(p + message.name, 90, half * ROW + 4, 540, message)

    # Throughput over time, and per instance
    plots_top = 44 + 3 * (image + 30) + 50
    screen.stripchart("Throughput", [
        ("Input rate (Hz)", p + "InputRate_RBV", 0, "blue"),
        ("Processed rate (Hz)", p + "ProcessedRate_RBV", 0, "green"),
        ("Frames lost", p + "FramesMissed_RBV", 1, "red"),
    ], ["Rate (Hz)", "Frames lost"], 10, plots_top, 600, 330)
    screen.waveform_plot("Rate per instance", p + "InstanceRates_RBV", "Hz", 620, plots_top,
                         350, 330)

    # The beamline at a glance, and the way to the detector's own screen
    beam_top = status_top + ROW * (half + 1) + 60
    with screen.group("Beamline", left, beam_top, 650, 200):
        screen.write_button(d + "cam1:Acquire", 1, "Acquire", 5, 0, 90, "green")
        screen.write_button(d + "cam1:Acquire", 0, "Stop", 100, 0, 90, "red")
        screen.readback(d + "cam1:DetectorState_RBV", 200, 3, 110,
                        find(detector.STATUS_PVS, "cam1:DetectorState_RBV"))
        screen.readback(d + "cam1:ArrayRate_RBV", 320, 3, 100,
                        find(detector.STATUS_PVS, "cam1:ArrayRate_RBV"))
        screen.open_button(DETECTOR, "Detector and stage...", 430, 0, 190)
        screen.setting_row(d, find(detector.SETTINGS, "cam1:ScanSource"), 5, 34)
        for row, motor in enumerate(stage.MOTORS):
            screen.motor_row(d, motor, 5, 34 + (row + 1) * ROW)
    return screen


def detector_screen() -> Screen:
    """The detector's cam1 records, its frames, and the sample stage."""
    d = "$(D)"
    rows = len(detector.SETTINGS)
    screen = Screen("ptychoedge: detector $(D)", 1060, 40 + ROW * (rows + 2) + 260)
    _title(screen, "Simulated detector $(D)cam1: and stage", 700)
    with screen.group("Settings", 10, 44, 420, ROW * (rows + 1)):
        for row, spec in enumerate(detector.SETTINGS):
            width = 200 if spec.kind is Kind.STRING else 120
            screen.setting_row(d, spec, 5, row * ROW, 110, width)
    with screen.group("Status", 440, 44, 600, ROW * (len(detector.STATUS_PVS) + 1)):
        for row, spec in enumerate(detector.STATUS_PVS):
            width = 380 if spec.kind is Kind.STRING else 150
            screen.status_row(d, spec, 5, row * ROW, 170, width)
    image_top = 44 + ROW * (len(detector.STATUS_PVS) + 1) + 10
    screen.label("Frame", 445, image_top, 200)
    screen.image(f"pva://{d}{detector.IMAGE}", "Frame", 445, image_top + 22, 300, "GRAY")
    stage_top = 44 + ROW * (rows + 1) + 10
    with screen.group("Stage", 10, stage_top, 420, ROW * (len(stage.MOTORS) + 1) + 30):
        for row, motor in enumerate(stage.MOTORS):
            screen.motor_row(d, motor, 5, row * ROW)
    return screen


def generate() -> dict[str, str]:
    """File name -> the screen's XML."""
    return {MAIN: main_screen().xml(), DETECTOR: detector_screen().xml()}


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the screens; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ptychoedge.pvdb.screens",
                                     description="Write the Phoebus screens from the PV spec.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "opi",
                        help="folder to write (default: opi/ of this checkout)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a screen differs from the spec's")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(path)
    if stale:
        print(f"out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
