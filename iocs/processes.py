"""Child processes that never outlive their parent.

Every program that starts others (the simulated beamline, later the pipeline
supervisor) starts them here: each child gets SIGTERM from the kernel if its
parent dies, even by SIGKILL, so no orphan is ever left running.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
LOG_LIMIT = 5_000_000  # bytes a child's log may reach before it starts again


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `module` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class Child:
    """One supervised child process, its output to a log file or ours."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115
        self.popen = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent,
        )
        log.debug("started %s (pid %d): %s", name, self.popen.pid, " ".join(self.args))

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def bound_log(self, limit: int = LOG_LIMIT) -> None:
        """Keep the log file under `limit` bytes: past it, its content moves to `<log>.1`
        and the file starts again empty. The child writes on, appending, so its next
        lines land at the new start (what it writes during the copy is lost)."""
        if self.log_path is None:
            return
        try:
            if self.log_path.stat().st_size <= limit:
                return
            shutil.copyfile(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
            os.truncate(self.log_path, 0)
        except OSError as error:
            log.warning("%s: log not rotated: %s", self.name, error)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def log_tail(path: Path, size: int = 20_000) -> str:
    """The last `size` bytes of a child's log, "" if there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def last_json(text: str) -> dict | None:
    """A child's verdict, where it ends its output with a line of JSON; None before that."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def stop_all(children: Sequence[Child], timeout: float = 10.0) -> None:
    """SIGINT every child, then SIGKILL whatever is still running after `timeout`."""
    for child in children:
        child.signal(signal.SIGINT)
    for child in children:
        if not child.wait(timeout):
            log.warning("%s did not stop on SIGINT; killing it", child.name)
            child.signal(signal.SIGKILL)
            child.wait(5.0)
        child.close()
