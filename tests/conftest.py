"""Shared fixtures: unique PV prefixes and real processes on loopback; the two tiers.

A test is `integration` when it starts a process (an IOC, a server, a command) or
talks EPICS over the network, and `slow` when it computes for seconds in this process
(training a network, a whole scan); both are left out of the fast tier, which is
`python -m pytest -m "not integration"` (docs/testing.md). A test is marked by hand or
here, by the fixtures it uses (INTEGRATION_FIXTURES); an unmarked test that starts a
process fails, so no process hides in the fast tier.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptychoedge.pvdb import readiness

INTEGRATION = "integration"
INTEGRATION_FIXTURES = {"spawn", "pva"}
"""Fixtures that start processes or talk EPICS: a test that uses one is `integration`."""
_STARTED = pytest.StashKey[list[str]]()
"""The processes a fast-tier test tried to start."""

RELIABILITY_FIGURES = pytest.StashKey[list[dict]]()
"""Rows that tests/test_faults.py records, shown in the summary of the run."""
RELIABILITY_COLUMNS = ("scenario", "load", "faults", "survived", "inputs", "frames lost", "notes")


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.get_closest_marker("slow") is not None):
            item.add_marker(INTEGRATION)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """A fast-tier test that starts a process (in a fixture of any scope, or in the test)
    is refused the process and fails: mark it `integration`."""
    if item.get_closest_marker(INTEGRATION) is not None:
        return (yield)
    started = item.stash[_STARTED] = []
    execute = subprocess.Popen._execute_child

    def refuse(popen, args, *rest, **kwargs):
        started.append(" ".join(map(str, args)) if isinstance(args, list | tuple) else str(args))
        raise RuntimeError(f"{item.nodeid} starts a process ({started[-1][:120]}): "
                           "mark it @pytest.mark.integration")
    subprocess.Popen._execute_child = refuse
    try:
        return (yield)
    finally:
        subprocess.Popen._execute_child = execute


@pytest.fixture(autouse=True)
def fast_tests_start_no_process(request):
    """Fails the fast-tier test that tried to start a process, even if the code under
    test caught the refusal."""
    yield
    started = request.node.stash.get(_STARTED, [])
    assert not started, f"not marked integration, but starts processes: {started}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(INTEGRATION) is not None:
        share_libca()


def share_libca() -> None:
    """Point pyepics at epicscorelibs' libca, which aioca (ophyd-async) loads: two copies of
    libca in one process crash the interpreter at exit. Done before the first integration
    test: pyepics loads its libca at its first Channel Access call, which no fast test
    makes, and collection may already have imported `epics.ca` (the warning saying the
    import comes too late assumes libca was loaded with it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import epicscorelibs.path.pyepics  # noqa: F401


def pytest_terminal_summary(terminalreporter) -> None:
    """The reliability table, in every run of tests/test_faults.py (capture hides what a
    fixture prints)."""
    rows = terminalreporter.config.stash.get(RELIABILITY_FIGURES, [])
    if not rows:
        return
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write_line("| " + " | ".join(RELIABILITY_COLUMNS) + " |")
    terminalreporter.write_line("|" + " --- |" * len(RELIABILITY_COLUMNS))
    for row in rows:
        cells = (str(row.get(column.replace(" ", "_"), "")) for column in RELIABILITY_COLUMNS)
        terminalreporter.write_line("| " + " | ".join(cells) + " |")


@pytest.fixture
def prefix() -> str:
    """A PV prefix no other test uses."""
    return f"T{uuid.uuid4().hex[:8]}:"


class Spawned:
    """A child process in its own process group, its output in a log file, run in the
    log file's folder (what it writes by default lands there, not in the repository).

    It is handed a ready file (pvdb/readiness.py): `ready()` says whether a command that
    announces readiness (`ptychoedge sim`, `ioc`, `node`) has said that it serves.
    """

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = log_path
        self.ready_path = log_path.with_suffix(".ready")
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=log_path.parent,
            env={**os.environ, readiness.ENV: str(self.ready_path), **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """Whether the child announced that it serves."""
        return readiness.announced(self.ready_path) is not None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def interrupt(self, timeout: float = 15.0) -> int | None:
        """SIGINT, as Ctrl-C would; the exit code, or None if it did not stop."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.alive():
            self.interrupt(10.0)
        # anything left in the group, the child's own children included
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)
        self._log.close()


class Processes:
    """Children started for a test or a module, their logs in one folder, stopped together."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Spawned] = []

    def start(self, *args: str, name: str | None = None,
              env: dict[str, str] | None = None) -> Spawned:
        label = name or Path(args[0]).name
        child = Spawned(list(args), self.log_dir / f"{label}-{len(self.children)}.log", env)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """Start a command as a child process; every child is stopped at teardown."""
    processes = Processes(tmp_path)
    yield processes.start
    processes.stop()


def start_sim(start: Callable[..., Spawned], d: str, log_dir: Path, *args: str) -> Spawned:
    """`ptychoedge sim` on prefix `d`, once it is ready."""
    sim = start(*ptychoedge("sim", "--prefix", d, "--log-dir", str(log_dir), *args), name="sim")
    wait_until(sim.ready, 60, "simulated beamline", sim)
    return sim


def start_ioc(start: Callable[..., Spawned], ctx, p: str, input_channel: str, state_dir: Path,
              *args: str) -> Spawned:
    """`ptychoedge ioc` on prefix `p` reading `input_channel`, once it answers."""
    ctx.disconnect()  # channels of an IOC that stopped would reconnect only slowly
    ioc = start(*ptychoedge("ioc", "--prefix", p, "--input-channel", input_channel,
                            "--state-dir", str(state_dir), *args), name="ioc")
    wait_until(ioc.ready, 60, "pipeline IOC", ioc)
    wait_until(pva_ready(ctx, p + "State_RBV"), 30, "pipeline IOC over pvAccess", ioc)
    return ioc


def shipped_model_dir(directory: Path) -> Path:
    """`directory`, made, holding a copy of the shipped model: a model directory of a test's
    own, which it may write to."""
    from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR, copy_model

    copy_model(DEFAULT_MODEL, MODEL_DIR, directory)
    return directory


def instrument_with_probe(probe: str):
    """The simulator's instrument (128-pixel frames, the shipped model's flux) with the probe
    preset `probe` (sim/probes.py)."""
    from ptychoedge.inference.instrument import Instrument
    from ptychoedge.inference.manifest import DEFAULT_MODEL, load_manifest
    from ptychoedge.sim import physics
    from ptychoedge.sim.probes import named_probe

    return Instrument(physics.geometry(128), named_probe(probe, 128, 1e-8),
                      load_manifest(DEFAULT_MODEL).instrument.photons)


def ptychoedge(*args: str) -> list[str]:
    """The `ptychoedge` command line, run with this interpreter."""
    return [sys.executable, "-m", "ptychoedge.iocs.cli", *args]


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               child: Spawned | None = None) -> object:
    """Poll `condition` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise AssertionError(f"{what}: process exited early\n{child.log()}")
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    detail = f"\n{child.log()}" if child is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


@pytest.fixture(scope="session")
def pva():
    """A p4p client context for the whole session."""
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False)
    yield ctx
    ctx.close()


def pva_ready(ctx, name: str) -> Callable[[], bool]:
    def connected() -> bool:
        try:
            ctx.get(name, timeout=0.5)
            return True
        except Exception:
            # a channel searched for before its server started is searched for ever
            # more rarely: drop it, so the next try searches at once
            ctx.disconnect(name)
            return False
    return connected


@pytest.fixture(autouse=True)
def no_pvaccess_here():
    """pvapy stays in the processes it runs in: its own EPICS libraries beside softioc's,
    p4p's and pyepics' in the test process were seen to break CA monitors and crash the
    interpreter at exit."""
    yield
    assert "pvaccess" not in sys.modules, "this test imported pvaccess (pvapy) into pytest"
