"""`ptychoedge screens`: where the Phoebus screens are, and the command that opens them.

The screens (`main.bob`: the pipeline beside the detector; `detector.bob`: the
cam1 records and the stage) are installed with the package and generated from
the PV spec (`python -m ptychoedge.pvdb.screens`). Their macros are `P`, the
pipeline's prefix, and `D`, the beamline's.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from urllib.parse import quote

from ptychoedge.pvdb import screens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=screens.MACROS["P"],
                        help="pipeline PV prefix, macro P (default %(default)s)")
    parser.add_argument("--beamline-prefix", default=screens.MACROS["D"],
                        help="beamline (detector and stage) PV prefix, macro D "
                             "(default %(default)s)")
    parser.add_argument("--screen", choices=screens.SCREENS, default=screens.MAIN,
                        help="screen to open (default %(default)s)")
    parser.add_argument("--phoebus", default="phoebus",
                        help="the Phoebus launcher (default %(default)s; often phoebus.sh)")


def open_command(path: Path, pipeline_prefix: str, beamline_prefix: str,
                 phoebus: str = "phoebus") -> str:
    """The shell command that opens screen `path` in Phoebus with the macros set."""
    macros = f"P={quote(pipeline_prefix, safe=':')}&D={quote(beamline_prefix, safe=':')}"
    resource = f"file:{path}?{macros}"
    return f"{shlex.quote(phoebus)} -resource {shlex.quote(resource)}"


def run(args: argparse.Namespace) -> int:
    folder = screens.opi_dir()
    missing = [name for name in screens.SCREENS if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"ptychoedge screens: error: {', '.join(missing)} not found in "
                         f"{folder}; reinstall ptychoedge")
    print(f"screens: {folder}")
    for name in screens.SCREENS:
        print(f"  {name}")
    print("open with:")
    command = open_command(folder / args.screen, args.prefix, args.beamline_prefix,
                           args.phoebus)
    print(f"  {command}")
    return 0
