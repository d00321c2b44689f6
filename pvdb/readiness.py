"""Readiness: a long-running command tells whoever started it that it serves.

A program that starts `ptychoedge sim`, `ptychoedge ioc` or `ptychoedge node` (a
test, a service manager's wrapper, a script) and must know when the command's PVs
answer names a file in the environment variable `PTYCHOEDGE_READY_FILE`. The
command takes the name at its start (`claim`), so that the children it starts do
not inherit it, and writes the file once it serves (`Readiness.announce`): the
file appears whole (written aside, then renamed), holding one line of JSON with
the process id and what it serves. Without the variable nothing is written.

This lives in `pvdb/`, beside the PV contract it completes (the PVs of a spec are
served from this moment on): the simulator and the IOCs import `pvdb/` and not each
other, and it needs nothing outside the standard library.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ENV = "PTYCHOEDGE_READY_FILE"


@dataclass(frozen=True)
class Readiness:
    """Where this process says that it serves; `path` None: nobody asked."""

    path: Path | None

    def announce(self, serves: str) -> None:
        """Write the ready file, saying what this process serves (a prefix, a PV)."""
        if self.path is None:
            return
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        aside.write_text(json.dumps({"pid": os.getpid(), "serves": serves}) + "\n")
        os.replace(aside, self.path)


def claim(environ: dict[str, str] | None = None) -> Readiness:
    """Take the ready file's name out of the environment (`os.environ` by default).

    Only this process, not the children it starts, then announces to it.
    """
    name = (os.environ if environ is None else environ).pop(ENV, "")
    return Readiness(Path(name) if name else None)


def announced(path: Path) -> dict | None:
    """What the process that `path` was handed announced, or None while it has not."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
