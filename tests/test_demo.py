"""The main job, `ptychoedge demo`, end to end on its own prefixes."""

from __future__ import annotations

import json
import subprocess

from conftest import ptychoedge, wait_until

from ptychoedge.inference.instrument import read_cxi


def test_demo_reconstructs_every_frame_and_writes_pictures(spawn, prefix, tmp_path):
    out = tmp_path / "demo"
    demo = spawn(*ptychoedge("demo", "--prefix", prefix + "E:", "--sim-prefix", prefix,
                             "--rate", "100", "--passes", "1", "--max-instances", "2",
                             "--refine", "4", "--out", str(out)), name="demo")
    wait_until(lambda: not demo.alive(), 300, "the demo's end")
    assert demo.popen.returncode == 0, demo.log()
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == report["processed"] == 400
    assert report["lost"] == 0
    # the live mosaic scores as the offline evaluation does (MODELS.md: 0.57 / 0.88)
    assert report["mosaic_amplitude_correlation"] > 0.7
    assert report["mosaic_phase_ssim"] > 0.8
    assert (out / "mosaic.png").stat().st_size > 10_000
    # then refined through the physics: truer than the network's mosaic
    refined = report["refined"]
    for name in ("amplitude", "phase"):
        assert refined[f"{name}_correlation"] > max(0.9, report[f"mosaic_{name}_correlation"])
    assert (out / "refined.png").stat().st_size > 10_000
    # with the probe it refined, written as an instrument file
    instrument = read_cxi(refined["instrument"])
    assert instrument.probe.shape == (1, 128, 128)
    # and what two half-scans agree on, from the object pixel up
    pixel_nm = instrument.object_pixel_size * 1e9
    assert pixel_nm <= refined["resolution_nm"] < 10 * pixel_nm
    assert "stopping the pipeline and the beamline" in demo.log()


def test_demo_stops_cleanly_on_ctrl_c(spawn, prefix, tmp_path):
    demo = spawn(*ptychoedge("demo", "--prefix", prefix + "E:", "--sim-prefix", prefix,
                             "--out", str(tmp_path / "demo")), name="demo")
    wait_until(lambda: "scanning:" in demo.log() or "pipeline starting" in demo.log(), 180,
               "the demo under way", demo)
    assert demo.interrupt(60) == 130
    log = demo.log()
    assert "stopping the pipeline and the beamline" in log and "Traceback" not in log
    left = subprocess.run(["pgrep", "-af", prefix], capture_output=True, text=True).stdout
    assert left == "", f"processes left behind:\n{left}"
