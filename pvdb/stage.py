"""PVs of the simulated sample stage: motor records `$(D)m1` (x) and `$(D)m2` (y).

Positions are in micrometres with 0 at the sample centre. Every field a motor
record has is served; these specs set the ones that differ between axes.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass


@dataclass(frozen=True)
class MotorSpec:
    """One motor record of the stage: its name, axis, limits and speed."""

    name: str
    axis: str
    description: str
    _: KW_ONLY
    units: str = "um"
    low_limit: float
    high_limit: float
    velocity: float
    precision: int
    max_velocity: float = 100.0
    acceleration: float = 0.1  # s to reach VELO (ACCL); the simulation moves at constant speed
    resolution: float = 1e-4  # motor step size (MRES)

    def __post_init__(self) -> None:
        """Refuse limits and speeds no motor record would take."""
        if not self.low_limit < self.high_limit:
            raise ValueError(f"{self.name}: low limit must be below the high limit")
        if not 0 < self.velocity <= self.max_velocity:
            raise ValueError(f"{self.name}: velocity must be in (0, max_velocity]")


MOTORS = (
    MotorSpec("m1", "x", "Sample stage x", low_limit=-50.0, high_limit=50.0,
              velocity=20.0, precision=4),
    MotorSpec("m2", "y", "Sample stage y", low_limit=-50.0, high_limit=50.0,
              velocity=20.0, precision=4),
)


def find(name: str) -> MotorSpec:
    """The spec of motor `name` ("m1") or of the motor on `name` axis ("x")."""
    for spec in MOTORS:
        if name in (spec.name, spec.axis):
            return spec
    raise KeyError(name)
