"""Build softioc records from the PV spec.

Settings refuse values outside their spec: the put is not applied, the
setting goes into MINOR/HW_LIMIT alarm, and `on_refused` gets the reason, so
the IOC can show it to the user. The next accepted put clears the alarm.

Settings are in the access security group `KNOBS`, everything read-only in
`DEFAULT`, so an ACF file can limit who changes an IOC while anyone reads it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from softioc import alarm, builder

from ptychoedge.pvdb.spec import Kind, PvSpec

log = logging.getLogger(__name__)

LONG_STRING_LENGTH = 256
SETTINGS_ASG = "KNOBS"  # access security group of every writable record

OnChange = Callable[[PvSpec, Any], None]
OnRefused = Callable[[PvSpec, str], None]


def set_prefix(prefix: str) -> None:
    """Make every record built after this start with `prefix` verbatim."""
    builder.SetSeparator("")
    builder.SetDeviceName(prefix)


def _display_fields(spec: PvSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {"DESC": spec.description[:40]}
    if spec.kind in (Kind.FLOAT, Kind.INT):
        if spec.units:
            fields["EGU"] = spec.units
        if spec.low is not None:
            fields["LOPR"] = spec.low
        if spec.high is not None:
            fields["HOPR"] = spec.high
    if spec.kind in (Kind.FLOAT, Kind.FLOAT_ARRAY):
        fields["PREC"] = spec.precision
    return fields


def input_record(spec: PvSpec, name: str | None = None):
    """A read-only record for a status PV or a setting's readback."""
    name = name or spec.name
    fields = _display_fields(spec)
    match spec.kind:
        case Kind.FLOAT:
            return builder.aIn(name, initial_value=float(spec.initial), **fields)
        case Kind.INT:
            return builder.longIn(name, initial_value=int(spec.initial), **fields)
        case Kind.ENUM:
            return builder.mbbIn(name, *spec.choices, initial_value=int(spec.initial), **fields)
        case Kind.STRING:
            return builder.longStringIn(name, initial_value=str(spec.initial),
                                        length=LONG_STRING_LENGTH, **fields)
        case Kind.FLOAT_ARRAY:
            return builder.WaveformIn(name, length=spec.length, FTVL="DOUBLE", **fields)
    raise ValueError(f"unknown kind {spec.kind}")


def output_record(spec: PvSpec, on_change: OnChange, on_refused: OnRefused,
                  autosave: bool = False):
    """A writable record that checks every put against the spec; `autosave` keeps its value
    across IOC restarts (softioc's autosave, configured by the IOC)."""
    fields = _display_fields(spec)
    record = None
    in_alarm = False

    def validate(_record, value) -> bool:
        nonlocal in_alarm
        reason = spec.check(value)
        if reason is None:
            return True
        log.warning(reason)
        on_refused(spec, reason)
        in_alarm = True
        # The record is being processed while validate runs: raise the alarm afterwards.
        threading.Thread(
            target=record.set_alarm, args=(alarm.MINOR_ALARM, alarm.HW_LIMIT_ALARM)).start()
        return False

    def update(value) -> None:
        nonlocal in_alarm
        if in_alarm:
            in_alarm = False
            record.set_alarm(alarm.NO_ALARM, alarm.NO_ALARM)
        on_change(spec, value)

    common = {"validate": validate, "on_update": update, "autosave": autosave,
              "ASG": SETTINGS_ASG, **fields}
    if spec.every_put:
        common["always_update"] = True
        if spec.kind in (Kind.FLOAT, Kind.INT):
            common["MDEL"] = -1  # post a monitor on every put, not only on a change
    match spec.kind:
        case Kind.FLOAT:
            record = builder.aOut(spec.name, initial_value=float(spec.initial), **common)
        case Kind.INT:
            record = builder.longOut(spec.name, initial_value=int(spec.initial), **common)
        case Kind.ENUM:
            record = builder.mbbOut(spec.name, *spec.choices, initial_value=int(spec.initial),
                                    **common)
        case Kind.STRING:
            record = builder.longStringOut(spec.name, initial_value=str(spec.initial),
                                           length=LONG_STRING_LENGTH, **common)
        case _:
            raise ValueError(f"{spec.name}: no writable record for {spec.kind}")
    return record
