"""Build softioc records from the PV spec.

Settings refuse values outside their spec: the put is not applied, the
setting goes into MINOR/HW_LIMIT alarm, and `on_refused` gets the reason, so
the IOC can show it to the user. A value refused later, by whatever acts on
it, is put back to the one in force, in MINOR/STATE alarm. The next accepted
put clears either alarm.

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
_NOTHING = object()


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


class Setting:
    """A writable record that checks every put against its spec.

    A put outside the spec is not applied: the record goes into MINOR/HW_LIMIT
    alarm and `on_refused` gets the reason. A value accepted here but refused
    later (by the instances, say) is put back with `restore`, in MINOR/STATE
    alarm. The next accepted put clears either alarm.
    """

    def __init__(self, spec: PvSpec, on_change: OnChange, on_refused: OnRefused,
                 autosave: bool = False):
        """Build the record of `spec`, calling `on_change` with each accepted put.

        `autosave` keeps the value across IOC restarts (softioc's autosave, configured
        by the IOC).
        """
        self.spec = spec
        self._on_change = on_change
        self._on_refused = on_refused
        self._in_alarm = False
        # the value `restore` processes the record with: no put, so no change to act on
        self._restoring: Any = _NOTHING
        fields = {"validate": self._validate, "on_update": self._update, "autosave": autosave,
                  "ASG": SETTINGS_ASG, **_display_fields(spec)}
        if spec.every_put:
            fields["always_update"] = True
            if spec.kind in (Kind.FLOAT, Kind.INT):
                fields["MDEL"] = -1  # post a monitor on every put, not only on a change
        match spec.kind:
            case Kind.FLOAT:
                self.record = builder.aOut(spec.name, initial_value=float(spec.initial),
                                           **fields)
            case Kind.INT:
                self.record = builder.longOut(spec.name, initial_value=int(spec.initial),
                                              **fields)
            case Kind.ENUM:
                self.record = builder.mbbOut(spec.name, *spec.choices,
                                             initial_value=int(spec.initial), **fields)
            case Kind.STRING:
                self.record = builder.longStringOut(spec.name, initial_value=str(spec.initial),
                                                    length=LONG_STRING_LENGTH, **fields)
            case _:
                raise ValueError(f"{spec.name}: no writable record for {spec.kind}")

    def get(self) -> Any:
        """The value the record holds."""
        return self.record.get()

    def set(self, value: Any) -> None:
        """Set the value as a put would (`on_change` gets it)."""
        self.record.set(value)

    def restore(self, value: Any) -> None:
        """Show `value`, the one in force, again after the put of another was refused."""
        self._in_alarm = True
        self._restoring = value
        self.record.set(value, process=False)
        # processing posts the value and the alarm to clients
        self.record.set_alarm(alarm.MINOR_ALARM, alarm.STATE_ALARM)

    def _validate(self, _record, value) -> bool:
        reason = self.spec.check(value)
        if reason is None:
            return True
        log.warning(reason)
        self._on_refused(self.spec, reason)
        self._in_alarm = True
        # The record is being processed while validate runs: raise the alarm afterwards.
        threading.Thread(target=self.record.set_alarm,
                         args=(alarm.MINOR_ALARM, alarm.HW_LIMIT_ALARM)).start()
        return False

    def _update(self, value) -> None:
        # a record that acts on every put is processed by `restore` too: not a put
        if self._restoring is not _NOTHING and value == self._restoring:
            self._restoring = _NOTHING
            return
        self._restoring = _NOTHING
        if self._in_alarm:
            self._in_alarm = False
            self.record.set_alarm(alarm.NO_ALARM, alarm.NO_ALARM)
        self._on_change(self.spec, value)

