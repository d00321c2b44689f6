"""The fit guard: says loudly when the frames do not fit the running model.

Three signs, none needing the truth; the first two from the instances
(inference/quality.py), the third from the collector (inference/mosaic.py):

- the diffraction residual: frames like the model's validation frames stay near their
  typical value; frames of another probe, geometry or detector score far above it. The
  model's manifest sets the alarm limits (MINOR, MAJOR) from its validation data.
- the share of the frames' variation the answers explain: a network shown a sample it
  cannot read gives nearly one answer for every frame (the mean it learnt, a flat image),
  whose residual can stay low. Where the frames vary VARIES times their noise and more,
  answers that explain under EXPLAINS of it are MINOR.
- the agreement of neighbouring images where they overlap: images that are not this
  sample, or placed at positions out of step with their frames, disagree, though each
  frame on its own fits. Where the frames vary VARIES times their noise, an agreement
  under AGREES over OVERLAPS patches and more is MINOR.

Any held for `HOLD` seconds turns the pipeline's state to Misfit with a message that
says what it means and what to do; it clears as soon as both are back within bounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ptychoedge.pvdb.processors import FALLBACK_RESIDUAL_LIMITS, disagree, one_answer

HOLD = 3.0  # s out of bounds before the state changes: one odd second is not a misfit


@dataclass(frozen=True)
class Verdict:
    severity: int  # 0 none, 1 MINOR, 2 MAJOR: the alarm on the residual itself
    one_answer: bool  # the answers explain too little of the frames' variation: MINOR
    disagree: bool  # neighbouring images disagree where they overlap: MINOR
    misfit: bool  # held out of bounds long enough to say so
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


class FitGuard:
    def __init__(self, hold: float = HOLD):
        self.hold = hold
        self._out_since: float | None = None

    def judge(self, residual: float, explained: float, frames_over_noise: float,
              limits: tuple[float, float] | None, typical: float | None, model: str,
              now: float, *, not_counts: float = 0.0, agreement: float = 0.0,
              overlaps: int = 0) -> Verdict:
        """The share `explained` and the `agreement` (over `overlaps` patches) are judged
        only where the frames differ VARIES times their noise and more; a NaN residual (no
        frames yet) is no alarm. `not_counts`, pixels per frame outside the model's mask
        that are no counts (the pixel type's maximum, or below 0), names a likely cause of
        a residual out of bounds."""
        minor, major = limits or FALLBACK_RESIDUAL_LIMITS
        above = residual > minor
        one = one_answer(frames_over_noise, explained)
        apart = disagree(frames_over_noise, agreement, overlaps)
        if not (above or one or apart):
            self._out_since = None
            return Verdict(0, False, False, False, "")
        if self._out_since is None:
            self._out_since = now
        severity = (2 if residual > major else 1) if above else 0
        if now - self._out_since < self.hold:
            return Verdict(severity, one, apart, False, "")
        if above:
            usual = f"{typical:.3f}" if typical is not None else f"below {minor:.2f}"
            message = (f"frames unlike {model}'s training: residual {residual:.2f} (usual "
                       f"{usual}); train for this instrument (ptychoedge train --scan)")
            if not_counts >= 1:
                message = (f"frames unlike {model}'s: {not_counts:.0f} pixels of each are no "
                           f"counts (the pixel type's maximum or below 0: detector gaps, dead "
                           f"or saturated pixels?): give the model the detector's mask "
                           f"(ptychoedge train --mask); residual {residual:.2f} (usual {usual})")
        elif one:
            message = (f"{model}'s answers explain {max(explained, 0.0):.0%} of how the frames "
                       "differ: nearly one image for every frame, not this sample; Refine the "
                       "image, or Adapt (ptychoedge train --scan)")
        else:
            message = (f"neighbouring images disagree where they overlap (agreement "
                       f"{agreement:.0%}): positions out of step with the frames, or images "
                       f"that are not this sample; check the positions, then Refine the "
                       f"image, or Adapt (ptychoedge train --scan)")
        return Verdict(severity, one, apart, True, message)

