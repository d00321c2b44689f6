"""The `ptychoedge` command: one entry point, a subcommand per program."""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module with add_arguments/run, one-line help)
SUBCOMMANDS = {
    "sim": ("ptychoedge.sim.beamline", "the simulated beamline: detector and stage IOCs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptychoedge", description="Real-time PtychoNN reconstruction on EPICS.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        program = importlib.import_module(module)
        program.add_arguments(sub)
        sub.set_defaults(run=program.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
