"""The declarative form of a PV: what every IOC, screen and device reads.

A `PvSpec` names one process variable relative to its IOC's prefix and says
what kind of value it carries, its limits, units and enum strings. A setting
(`readback=True`) also gets a read-only `<name>_RBV` record that shows the
value the IOC actually applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_STRING_LENGTH = 255  # characters a STRING setting holds (its records have one more, for NUL)


class Kind(Enum):
    """The kind of value a PV carries, which decides its record type."""

    FLOAT = "float"
    INT = "int"
    ENUM = "enum"
    STRING = "string"
    FLOAT_ARRAY = "float_array"


@dataclass(frozen=True)
class PvSpec:
    """One PV: its name under the IOC's prefix, its kind, limits, units and enum strings."""

    name: str
    kind: Kind
    description: str
    initial: float | int | str = 0
    units: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    precision: int = 3
    writable: bool = True
    readback: bool = False
    length: int = 0  # element count of a FLOAT_ARRAY
    every_put: bool = False  # act on (and post) every put, even of the value it holds
    allow_empty: bool = True  # whether a STRING setting may be set to ""
    # the field of the programs' settings this knob sets (snake_case; the processors'
    # argument is its camelCase), "" for a PV no program reads as a setting
    setting: str = ""

    @property
    def readback_name(self) -> str:
        """The name of the read-only record that shows the value applied."""
        return f"{self.name}_RBV"

    def check(self, value: float | int | str) -> str | None:
        """Why `value` is not acceptable for this PV, or None if it is."""
        if self.kind is Kind.ENUM:
            if not 0 <= int(value) < len(self.choices):
                return f"{self.name}: {value} is not one of {', '.join(self.choices)}"
        elif self.kind in (Kind.FLOAT, Kind.INT):
            if value != value:  # NaN passes every comparison
                return f"{self.name}: NaN refused"
            if self.low is not None and value < self.low:
                return f"{self.name}: {value} refused, below the minimum {self.low} {self.units}"
            if self.high is not None and value > self.high:
                return f"{self.name}: {value} refused, above the maximum {self.high} {self.units}"
        elif self.kind is Kind.STRING:
            text = str(value)
            if not text.strip() and not self.allow_empty:
                return f"{self.name}: an empty value refused"
            if len(text) > MAX_STRING_LENGTH:
                return (f"{self.name}: {len(text)} characters refused, longer than "
                        f"{MAX_STRING_LENGTH}")
        return None


def find(specs: tuple[PvSpec, ...], name: str) -> PvSpec:
    """The spec named `name` in `specs`; KeyError if there is none."""
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)


def all_names(specs: tuple[PvSpec, ...]) -> list[str]:
    """Every PV name a spec list serves, readbacks included, without prefix."""
    names = []
    for spec in specs:
        names.append(spec.name)
        if spec.readback:
            names.append(spec.readback_name)
    return names
