"""The `ptychoedge` command: one entry point, a subcommand per program."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments/run, one-line help)
SUBCOMMANDS = {
    "sim": ("ptychoedge.apps.beamline", "the simulated beamline: detector and stage IOCs"),
    "make-scan": ("ptychoedge.sim.make_scan", "simulate a scan of a probe and sample, as CXI"),
    "ioc": ("ptychoedge.iocs.pipeline_ioc",
            "the pipeline IOC: knobs, throughput, supervision and automatic scaling"),
    "node": ("ptychoedge.iocs.node_agent",
             "a node agent: runs a pipeline's inference instances on one more host"),
    "demo": ("ptychoedge.apps.demo",
             "the main job: simulated beamline, pipeline IOC and a live scan, end to end"),
    "train": ("ptychoedge.inference.training",
              "train PtychoNN for an instrument: simulated, from a recorded scan, or "
              "self-supervised"),
    "adapt": ("ptychoedge.inference.adaptation",
              "fine-tune a model on a scan's own frames; keep it only if it explains them "
              "clearly better"),
    "reconstruct": ("ptychoedge.inference.reconstruct",
                    "reconstruct a recorded scan offline: stitched image, CXI, residuals"),
    "evaluate": ("ptychoedge.inference.evaluate",
                 "score reconstructions against the simulator's ground truth"),
    "screens": ("ptychoedge.iocs.screens",
                "where the Phoebus screens are, and the command that opens them"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the `chosen` subcommand's module is imported (torch is slow to load)."""
    parser = argparse.ArgumentParser(
        prog="ptychoedge", description="Real-time PtychoNN reconstruction on EPICS.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == chosen:
            try:
                program = importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != "torch":
                    raise
                parser.exit(2, f"ptychoedge {name}: error: needs torch, which this install "
                               f"lacks: pip install 'ptychoedge[torch]' (see the README)\n")
            program.add_arguments(sub)
            sub.set_defaults(run=program.run, command_parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    args, unknown = build_parser(chosen).parse_known_args(argv)
    if unknown:  # with the subcommand's usage, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
