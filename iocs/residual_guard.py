"""The residual guard: says loudly when the frames do not fit the running model.

The diffraction residual (inference/quality.py) of frames like the model's validation
frames stays near their typical value; frames of another probe, geometry or sample
kind score far above it. The model's manifest sets the alarm limits (MINOR, MAJOR)
from its validation data. A residual above MINOR for `HOLD` seconds turns the
pipeline's state to Misfit with a message that says what it means and what to do;
it clears as soon as the residual falls below MINOR again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ptychoedge.pvdb.processors import FALLBACK_RESIDUAL_LIMITS

HOLD = 3.0  # s above the limit before the state changes: one odd second is not a misfit


@dataclass(frozen=True)
class Verdict:
    severity: int  # 0 none, 1 MINOR, 2 MAJOR: the alarm on the residual itself
    misfit: bool  # held above MINOR long enough to say so
    message: str  # what to tell the operator while misfit, else ""


def model_limits(model_dir: Path, model: str) -> tuple[tuple[float, float] | None, float | None]:
    """(MINOR, MAJOR) alarm limits and the typical residual from a model's manifest (read as
    plain JSON: the IOC loads no model), or (None, None) where it has none."""
    try:
        validation = json.loads((model_dir / f"{model}.json").read_text())["validation"]
        limits = validation.get("residual_alarm")
        typical = validation.get("residual_p50")
        return ((float(limits[0]), float(limits[1])) if limits else None,
                float(typical) if typical is not None else None)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None, None


class ResidualGuard:
    def __init__(self, hold: float = HOLD):
        self.hold = hold
        self._above_since: float | None = None

    def judge(self, residual: float, limits: tuple[float, float] | None, typical: float | None,
              model: str, now: float) -> Verdict:
        minor, major = limits or FALLBACK_RESIDUAL_LIMITS
        if not residual > minor:  # NaN (no frames yet) is no alarm
            self._above_since = None
            return Verdict(0, False, "")
        if self._above_since is None:
            self._above_since = now
        severity = 2 if residual > major else 1
        if now - self._above_since < self.hold:
            return Verdict(severity, False, "")
        usual = f"{typical:.3f}" if typical is not None else f"below {minor:.2f}"
        return Verdict(severity, True,
                       f"frames unlike {model}'s training: residual {residual:.2f} (usual "
                       f"{usual}); train for this instrument (ptychoedge train --scan)")
