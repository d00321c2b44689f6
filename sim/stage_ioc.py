"""The simulated sample stage: motor records `$(D)m1` (x) and `$(D)m2` (y), served by caproto.

A put to VAL moves the axis at VELO and completes only when the move ends, as a
real motor record's put callback does, so `caput -c`, pyepics `caput(wait=True)`,
ophyd's `EpicsMotor` and ophyd-async's `Motor.set` all return with the readback
at the target. RBV and DRBV update every `TICK` during a move; DMOV, MOVN, TDIR
and MSTA follow the motion. STOP=1 (or SPMG Stop/Pause) ends a move where it is
and completes the pending puts. A target outside HLM/LLM is refused: the axis
does not move, LVIO=1, VAL goes into alarm and the put fails. A new VAL during a
move retargets it; every put waiting on that move completes when it ends.
SET=Set redefines the position (OFF, or the dial position when FOFF=Frozen)
without moving. The motion is at constant speed: ACCL is reported, not simulated.

Run it as `python -m ptychoedge.sim.stage_ioc --prefix SIM1:`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
from typing import Any

from caproto import AlarmSeverity, AlarmStatus, get_server_address_list
from caproto.asyncio.server import Context
from caproto.server import PVGroup, PvpropertyDouble, pvproperty
from caproto.server.records import MotorFields

from ptychoedge.pvdb.stage import MOTORS, MotorSpec

log = logging.getLogger("ptychoedge.sim.stage_ioc")

TICK = 0.02  # s between readback updates during a move
# caproto batches monitor updates for up to 10 ms; a put completes only after this
# much longer, so a client that sees the completion has already seen DMOV=1.
MONITOR_FLUSH = 0.03  # s

# Bits of the motor record's MSTA
MSTA_DIRECTION_POSITIVE = 1 << 0
MSTA_DONE = 1 << 1
MSTA_MOVING = 1 << 10
MSTA_HOMED = 1 << 14

POSITION_FIELDS = ("RBV", "DRBV", "HLM", "LLM", "DHLM", "DLLM", "OFF", "RDBD", "MRES", "TWV",
                   "RLV", "DVAL", "DIFF")
VELOCITY_FIELDS = ("VELO", "VMAX", "VBAS", "JVEL", "HVEL", "BVEL")


class PutRefused(ValueError):
    """A put the record will not act on: the client's put fails, the IOC logs a warning."""


class _RefusedPutAsWarning(logging.Filter):
    # caproto logs every failed put as an error with a traceback; a refused put is routine.
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PutRefused):
            record.name, record.msg, record.args = log.name, "%s", (record.exc_info[1],)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _Setpoint(PvpropertyDouble):
    """VAL, whose putter checks the soft limits itself, as the record must set LVIO."""

    async def verify_value(self, value: float) -> Any:
        # Skips caproto's own check against the control limits (HLM/LLM).
        return await self.putter(self, value)


class Axis(PVGroup):
    """One motor record of the stage, positions in the spec's units."""

    motor = pvproperty(value=0.0, name="", record="motor", dtype=_Setpoint, precision=4,
                       doc="Sample stage axis")

    def __init__(self, *args: Any, spec: MotorSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        self.dial = 0.0  # the axis position, in dial coordinates
        self.target = 0.0  # dial target of the move in progress
        self.offset = 0.0  # OFF: user = sign * dial + offset
        self.sign = 1  # DIR: +1 Pos, -1 Neg
        self._stop_requested = False
        self._motion: asyncio.Task[None] | None = None

    @property
    def record(self) -> MotorFields:
        return self.motor.field_inst

    @property
    def position(self) -> float:
        """The user position (RBV)."""
        return self.user(self.dial)

    @property
    def moving(self) -> bool:
        return self._motion is not None and not self._motion.done()

    def user(self, dial: float) -> float:
        return self.sign * dial + self.offset

    def to_dial(self, user: float) -> float:
        return (user - self.offset) * self.sign + 0.0  # never -0.0

    async def initialise(self) -> None:
        """Set the fields from the spec; call before serving so clients never see defaults."""
        spec, rec = self.spec, self.record
        await self.motor.write_metadata(units=spec.units, precision=spec.precision)
        for name, channel in rec.pvdb.items():
            field = name.rpartition(".")[2]
            if field in POSITION_FIELDS:
                await channel.write_metadata(units=spec.units, precision=spec.precision)
            elif field in VELOCITY_FIELDS:
                await channel.write_metadata(units=f"{spec.units}/s", precision=spec.precision)
        await rec.description.write(spec.description)
        await rec.engineering_units.write(spec.units)
        await rec.velocity.write(spec.velocity, verify_value=False)
        await rec.max_velocity.write(spec.max_velocity)
        await rec.jog_velocity.write(spec.velocity)
        await rec.home_velocity.write(spec.velocity)
        await rec.seconds_to_velocity.write(spec.acceleration)
        await rec.motor_step_size.write(spec.resolution)
        await rec.encoder_step_size.write(spec.resolution)
        await rec.readback_step_size.write(spec.resolution)
        await rec.egu_s_per_revolution.write(spec.resolution * rec.steps_per_revolution.value)
        await rec.retry_deadband.write(spec.resolution)
        await rec.tweak_step_size.write(1.0)
        await rec.output_specification.write(f"sim {spec.axis}")
        await rec.enable_control.write("Enable")
        await rec.limit_violation.write(0)
        await rec.dial_high_limit.write(spec.high_limit, verify_value=False)
        await rec.dial_low_limit.write(spec.low_limit, verify_value=False)
        await self._frame_changed()
        await self._set_moving(False)

    async def _frame_changed(self) -> None:
        """Publish what depends on OFF and DIR: user limits, readbacks, VAL."""
        rec = self.record
        low, high = sorted((self.user(rec.dial_low_limit.value),
                            self.user(rec.dial_high_limit.value)))
        await rec.user_low_limit.write(low, verify_value=False)
        await rec.user_high_limit.write(high, verify_value=False)
        await rec.user_offset.write(self.offset, verify_value=False)
        await rec.user_direction.write("Pos" if self.sign > 0 else "Neg", verify_value=False)
        # Clients such as ophyd take the setpoint's limits from VAL's control limits.
        await self.motor.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high,
                                        lower_disp_limit=low, upper_disp_limit=high)
        await self.motor.write(self.user(self.target), verify_value=False)
        await self._publish_position()

    async def _publish_position(self) -> None:
        rec = self.record
        await rec.dial_readback_value.write(self.dial)
        await rec.raw_readback_value.write(round(self.dial / rec.motor_step_size.value))
        await rec.difference_dval_drbv.write(self.target - self.dial)
        await rec.user_readback_value.write(self.position)

    async def _set_moving(self, moving: bool) -> None:
        rec = self.record
        status = (MSTA_MOVING if moving else MSTA_DONE) | (rec.motor_status.value & MSTA_HOMED)
        if rec.direction_of_travel.value:
            status |= MSTA_DIRECTION_POSITIVE
        await rec.motor_status.write(status)
        await rec.motor_is_moving.write(int(moving))
        await rec.done_moving_to_value.write(int(not moving))

    async def _run_move(self) -> None:
        rec = self.record
        await rec.direction_of_travel.write(int(self.target > self.dial))
        await self._set_moving(True)
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while not self._stop_requested and self.dial != self.target:
                await asyncio.sleep(TICK)
                now = loop.time()
                step = rec.velocity.value * (now - last)
                last = now
                remaining = self.target - self.dial
                await rec.direction_of_travel.write(int(remaining > 0))
                if abs(remaining) <= step:
                    self.dial = self.target
                else:
                    self.dial += math.copysign(step, remaining)
                await self._publish_position()
            if self._stop_requested:
                self.target = self.dial
                log.info("%s stopped at %g %s", self.motor.pvname, self.position,
                         self.spec.units)
        finally:
            self._stop_requested = False
            await self._publish_position()
            await self._set_moving(False)

    def stop(self) -> None:
        if self.moving:
            self._stop_requested = True

    async def move(self, position: float) -> float:
        """Move to user `position`; return where the axis ended (the target unless stopped)."""
        rec = self.record
        units = self.spec.units
        if rec.stop_pause_move_go.value in ("Stop", "Pause"):
            raise PutRefused(f"{self.motor.pvname}: motion disabled (SPMG "
                             f"{rec.stop_pause_move_go.value}); move to {position} refused")
        low, high = rec.user_low_limit.value, rec.user_high_limit.value
        if not low <= position <= high:
            await rec.limit_violation.write(1)
            raise PutRefused(f"{self.motor.pvname}: {position} {units} is outside the soft "
                             f"limits [{low}, {high}] {units}; move refused")
        await rec.limit_violation.write(0)
        if self.motor.alarm.severity != AlarmSeverity.NO_ALARM:
            await self.motor.alarm.write(status=AlarmStatus.NO_ALARM,
                                         severity=AlarmSeverity.NO_ALARM)
        self.target = self.to_dial(position)
        await rec.dial_desired_value.write(self.target)
        await rec.raw_desired_value.write(round(self.target / rec.motor_step_size.value))
        await self.motor.write(position, verify_value=False)  # VAL shows the target at once
        if not self.moving:
            log.debug("%s moving to %g %s", self.motor.pvname, position, units)
            self._motion = asyncio.create_task(self._run_move())
        assert self._motion is not None
        # A put whose client goes away must not stop the motor.
        await asyncio.shield(self._motion)
        if self.dial == self.to_dial(position):
            return position
        return self.position

    async def redefine(self, position: float) -> float:
        """SET mode: make the current position read `position` without moving."""
        if self.moving:
            raise PutRefused(f"{self.motor.pvname}: cannot redefine the position while moving")
        if self.record.offset_freeze_switch.value == "Frozen":
            self.dial = self.target = self.to_dial(position)
        else:
            self.offset = position - self.sign * self.dial
        await self._frame_changed()
        return position

    async def set_user_limit(self, value: float, *, high: bool) -> float:
        rec = self.record
        # With DIR Neg the user high limit is the dial low limit.
        field = rec.dial_high_limit if high == (self.sign > 0) else rec.dial_low_limit
        await field.write(self.to_dial(value), verify_value=False)
        await self._frame_changed()
        return value

    # VAL and the fields that act on the motion

    @motor.putter
    async def motor(self, instance: Any, value: float) -> float:
        if self.record.set_use_switch.value == "Set":
            position = await self.redefine(value)
        else:
            position = await self.move(value)
        await asyncio.sleep(MONITOR_FLUSH)
        return position

    @motor.fields.stop.putter
    async def _stop_put(fields: MotorFields, instance: Any, value: int) -> int:
        if value:
            fields.parent.group.stop()
        return 0

    @motor.fields.stop_pause_move_go.putter
    async def _spmg_put(fields: MotorFields, instance: Any, value: str) -> str:
        if value in ("Stop", "Pause"):
            fields.parent.group.stop()
        return value

    @motor.fields.velocity.putter
    async def _velo_put(fields: MotorFields, instance: Any, value: float) -> float:
        vmax = fields.max_velocity.value
        if value <= 0:
            raise PutRefused(f"{fields.parent.pvname}.VELO must be positive, not {value}")
        return min(value, vmax) if vmax > 0 else value

    @motor.fields.tweak_motor_forward.putter
    async def _twf_put(fields: MotorFields, instance: Any, value: int) -> int:
        if value:
            axis: Axis = fields.parent.group
            await axis.motor.write(axis.user(axis.target) + fields.tweak_step_size.value)
        return 0

    @motor.fields.tweak_motor_reverse.putter
    async def _twr_put(fields: MotorFields, instance: Any, value: int) -> int:
        if value:
            axis: Axis = fields.parent.group
            await axis.motor.write(axis.user(axis.target) - fields.tweak_step_size.value)
        return 0

    @motor.fields.relative_value.putter
    async def _rlv_put(fields: MotorFields, instance: Any, value: float) -> float:
        if value:
            axis: Axis = fields.parent.group
            await axis.motor.write(axis.user(axis.target) + value)
        return 0.0

    @motor.fields.home_forward.putter
    async def _homf_put(fields: MotorFields, instance: Any, value: int) -> int:
        return await fields.parent.group.home(value)

    @motor.fields.home_reverse.putter
    async def _homr_put(fields: MotorFields, instance: Any, value: int) -> int:
        return await fields.parent.group.home(value)

    async def home(self, value: int) -> int:
        # The home switch sits at dial 0, the sample centre.
        if value:
            await self.motor.write(self.user(0.0))
            await self.record.motor_status.write(self.record.motor_status.value | MSTA_HOMED)
        return 0

    # Fields that change the user frame

    @motor.fields.user_high_limit.putter
    async def _hlm_put(fields: MotorFields, instance: Any, value: float) -> float:
        return await fields.parent.group.set_user_limit(value, high=True)

    @motor.fields.user_low_limit.putter
    async def _llm_put(fields: MotorFields, instance: Any, value: float) -> float:
        return await fields.parent.group.set_user_limit(value, high=False)

    @motor.fields.dial_high_limit.putter
    async def _dhlm_put(fields: MotorFields, instance: Any, value: float) -> float:
        await instance.write(value, verify_value=False)
        await fields.parent.group._frame_changed()
        return value

    @motor.fields.dial_low_limit.putter
    async def _dllm_put(fields: MotorFields, instance: Any, value: float) -> float:
        await instance.write(value, verify_value=False)
        await fields.parent.group._frame_changed()
        return value

    @motor.fields.user_offset.putter
    async def _off_put(fields: MotorFields, instance: Any, value: float) -> float:
        axis: Axis = fields.parent.group
        axis.offset = value
        await axis._frame_changed()
        return value

    @motor.fields.user_direction.putter
    async def _dir_put(fields: MotorFields, instance: Any, value: str) -> str:
        axis: Axis = fields.parent.group
        position = axis.position
        axis.sign = -1 if value == "Neg" else 1
        # As the real record does, keep the user position and move the offset instead.
        axis.offset = position - axis.sign * axis.dial
        await axis._frame_changed()
        return value


class StageIOC:
    """Both stage axes under one prefix; `pvdb` is what a caproto server serves."""

    def __init__(self, prefix: str = "SIM1:", motors: tuple[MotorSpec, ...] = MOTORS) -> None:
        self.prefix = prefix
        self.axes = {spec.name: Axis(prefix=prefix + spec.name, spec=spec) for spec in motors}
        self.pvdb: dict[str, Any] = {}
        for axis in self.axes.values():
            self.pvdb.update(axis.pvdb)

    @property
    def motor_names(self) -> list[str]:
        return [axis.motor.pvname for axis in self.axes.values()]

    async def serve(self, interfaces: list[str] | None = None, *,
                    log_pv_names: bool = False) -> None:
        """Serve until cancelled."""
        logging.getLogger("caproto.circ").addFilter(_RefusedPutAsWarning())
        for axis in self.axes.values():
            await axis.initialise()

        async def announce(async_lib: Any) -> None:
            log.info("stage IOC serving %s", " ".join(self.motor_names))
            if log_pv_names:
                log.info("PVs:\n%s", "\n".join(self.pvdb))

        context = Context(self.pvdb, interfaces or get_server_address_list())
        try:
            await context.run(startup_hook=announce)
        finally:
            for axis in self.axes.values():
                axis.stop()


def _prefix(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"invalid PV prefix {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptychoedge.sim.stage_ioc",
        description="Simulated sample stage: motor records <prefix>m1 (x) and <prefix>m2 (y) "
                    "over Channel Access.")
    parser.add_argument("--prefix", type=_prefix, default="SIM1:",
                        help="PV prefix (default: %(default)s)")
    parser.add_argument("--interfaces", nargs="+", default=get_server_address_list(),
                        help="interfaces to serve on (default: %(default)s, or "
                             "EPICS_CAS_INTF_ADDR_LIST)")
    parser.add_argument("--list-pvs", action="store_true", help="log every PV served")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not args.verbose:
        logging.getLogger("caproto").setLevel(logging.WARNING)
    stage = StageIOC(args.prefix)

    async def run() -> None:
        server = asyncio.create_task(stage.serve(args.interfaces, log_pv_names=args.list_pvs))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server

    asyncio.run(run())
    log.info("stage IOC stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
