"""The simulated stage IOC: motor records that behave like real ones for every client."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import epics
import pytest
from conftest import Spawned, wait_until

from ptychoedge.pvdb.stage import MOTORS

pytestmark = pytest.mark.integration  # every test here starts the stage IOC or its command

STAGE_IOC = [sys.executable, "-m", "ptychoedge.sim.stage_ioc"]
VELOCITY = MOTORS[0].velocity


@pytest.fixture
def stage(spawn, prefix) -> Spawned:
    """A running stage IOC under `prefix`, both motors answering Channel Access."""
    child = spawn(*STAGE_IOC, "--prefix", prefix, name="stage_ioc")
    # DESC, which no client under test opens: ophyd wants to create its own PV objects.
    for spec in MOTORS:
        desc = epics.PV(f"{prefix}{spec.name}.DESC")
        wait_until(lambda desc=desc: desc.connected, 30.0, f"{desc.pvname} to connect", child)
        assert desc.get(use_monitor=False, timeout=5) == spec.description
    return child


def test_caput_with_wait_returns_at_the_target(stage, prefix):
    start = time.monotonic()
    assert epics.caput(prefix + "m1.VAL", 3.0, wait=True, timeout=10)
    elapsed = time.monotonic() - start
    assert epics.caget(prefix + "m1.RBV", use_monitor=False) == pytest.approx(3.0)
    assert epics.caget(prefix + "m1.DRBV", use_monitor=False) == pytest.approx(3.0)
    assert epics.caget(prefix + "m1.DMOV", use_monitor=False) == 1
    assert epics.caget(prefix + "m1.MOVN", use_monitor=False) == 0
    assert elapsed >= 0.8 * 3.0 / VELOCITY  # it travelled at VELO, it did not jump
    assert epics.caget(prefix + "m2.RBV", use_monitor=False) == 0.0


def polled(condition):
    """`condition`, once pyepics has handled what arrived: in a worker where another client
    made the thread's Channel Access context, monitor events may wait for a poll."""
    def check():
        epics.ca.poll()
        return condition()
    return check


def test_readback_moves_during_the_move(stage, prefix):
    readbacks: list[float] = []
    done: list[int] = []
    rbv = epics.PV(prefix + "m2.RBV", callback=lambda value, **_: readbacks.append(value))
    dmov = epics.PV(prefix + "m2.DMOV", callback=lambda value, **_: done.append(value))
    for pv in (rbv, dmov):
        assert pv.wait_for_connection(5)
    wait_until(polled(lambda: readbacks and done), 15.0, "first monitor updates", stage)
    assert epics.caput(prefix + "m2.VAL", -10.0, wait=True, timeout=10)
    wait_until(polled(lambda: readbacks[-1] == pytest.approx(-10.0) and done[-1] == 1), 5.0,
               "final monitor updates", stage)
    assert len([r for r in readbacks if -10.0 < r < 0.0]) >= 3
    assert 0 in done
    for pv in (rbv, dmov):
        pv.disconnect()


def test_ophyd_async_motor_set_returns_at_the_target(stage, prefix):
    from aioca import purge_channel_caches
    from ophyd_async.epics.motor import Motor

    async def move() -> tuple[float, float, int]:
        motor = Motor(prefix + "m1", name="m1")
        try:
            await motor.connect(timeout=10)
            start = time.monotonic()
            await motor.set(2.0)
            elapsed = time.monotonic() - start
            return (elapsed, await motor.user_readback.get_value(),
                    await motor.motor_done_move.get_value())
        finally:
            purge_channel_caches()  # before the loop closes, or libca calls back into it

    elapsed, readback, done = asyncio.run(move())
    assert readback == pytest.approx(2.0)
    assert done == 1
    assert elapsed >= 0.8 * 2.0 / VELOCITY
    assert epics.caget(prefix + "m1.RBV", use_monitor=False) == pytest.approx(2.0)


def test_ophyd_epics_motor_moves(stage, prefix):
    from ophyd import EpicsMotor

    motor = EpicsMotor(prefix + "m2", name="m2")
    motor.wait_for_connection(timeout=10)
    assert motor.limits == (MOTORS[1].low_limit, MOTORS[1].high_limit)
    assert motor.egu == "um"
    motor.set(1.5).wait(timeout=10)
    assert motor.position == pytest.approx(1.5)
    assert epics.caget(prefix + "m2.RBV", use_monitor=False) == pytest.approx(1.5)
    motor.destroy()


def test_stop_ends_a_move_short_of_the_target(stage, prefix):
    setpoint = epics.PV(prefix + "m1.VAL")
    assert setpoint.wait_for_connection(5)
    setpoint.put(40.0, use_complete=True)
    wait_until(lambda: epics.caget(prefix + "m1.RBV", use_monitor=False) > 1.0, 5.0,
               "the move to start", stage)
    assert epics.caget(prefix + "m1.DMOV", use_monitor=False) == 0
    assert epics.caput(prefix + "m1.STOP", 1)
    wait_until(lambda: setpoint.put_complete, 5.0, "the pending put to complete", stage)
    assert epics.caget(prefix + "m1.DMOV", use_monitor=False) == 1
    stopped = epics.caget(prefix + "m1.RBV", use_monitor=False)
    assert 1.0 < stopped < 20.0
    assert epics.caget(prefix + "m1.VAL", use_monitor=False) == pytest.approx(stopped)
    # It stays put: while m2 makes a move of its own, ticks of the same IOC that a move of
    # m1 left running would have used (a put with wait returns when the move ends)
    start = epics.caget(prefix + "m2.RBV", use_monitor=False)
    assert epics.caput(prefix + "m2.VAL", start + 2.0, wait=True, timeout=10)
    assert epics.caget(prefix + "m2.RBV", use_monitor=False) == pytest.approx(start + 2.0)
    assert epics.caget(prefix + "m1.RBV", use_monitor=False) == stopped
    assert epics.caget(prefix + "m1.DMOV", use_monitor=False) == 1
    setpoint.disconnect()


def test_put_beyond_the_soft_limit_is_refused(stage, prefix):
    high = epics.caget(prefix + "m1.HLM", use_monitor=False)
    assert high == MOTORS[0].high_limit
    epics.caput(prefix + "m1.VAL", high + 10.0, wait=True, timeout=5)
    assert epics.caget(prefix + "m1.LVIO", use_monitor=False) == 1
    assert epics.caget(prefix + "m1.SEVR", use_monitor=False) == 2  # MAJOR
    assert epics.caget(prefix + "m1.RBV", use_monitor=False) == 0.0
    assert epics.caget(prefix + "m1.VAL", use_monitor=False) == 0.0
    assert epics.caget(prefix + "m1.DMOV", use_monitor=False) == 1
    # Still answering, and the next good move clears the violation and the alarm.
    assert stage.alive()
    assert epics.caput(prefix + "m1.VAL", 1.0, wait=True, timeout=10)
    assert epics.caget(prefix + "m1.RBV", use_monitor=False) == pytest.approx(1.0)
    assert epics.caget(prefix + "m1.LVIO", use_monitor=False) == 0
    assert epics.caget(prefix + "m1.SEVR", use_monitor=False) == 0
    log = stage.log()
    assert "outside the soft limits" in log and "Traceback" not in log


def test_lowering_the_high_limit_refuses_what_it_allowed(stage, prefix):
    assert epics.caput(prefix + "m2.HLM", 2.0, wait=True, timeout=5)
    assert epics.caget(prefix + "m2.DHLM", use_monitor=False) == 2.0
    epics.caput(prefix + "m2.VAL", 3.0, wait=True, timeout=5)
    assert epics.caget(prefix + "m2.LVIO", use_monitor=False) == 1
    assert epics.caget(prefix + "m2.RBV", use_monitor=False) == 0.0


@pytest.mark.parametrize("args", [["--no-such-option"], ["--prefix", ""], ["--prefix"]])
def test_bad_command_line_is_one_line_error(args):
    result = subprocess.run([*STAGE_IOC, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_ioc_cleanly(stage, sig):
    stage.popen.send_signal(sig)
    assert stage.popen.wait(15) == 0
    log = stage.log()
    assert "Traceback" not in log
    assert "stage IOC serving" in log and "stage IOC stopped" in log
