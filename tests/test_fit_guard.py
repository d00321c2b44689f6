"""The fit guard's rule: the residual's alarm follows the limits at once, the misfit state
and its message only after the residual held above MINOR, and both clear below it; answers
that explain too little of how the frames differ, and neighbouring images that disagree
where they overlap, are misfits of their own, where the frames differ enough to say."""

import math

from ptychoedge.iocs.fit_guard import HOLD, FitGuard, Verdict
from ptychoedge.pvdb.processors import (
    AGREES,
    EXPLAINS,
    FALLBACK_RESIDUAL_LIMITS,
    OVERLAPS,
    VARIES,
)

ALIKE = (0.0, 0.0)  # (explained, frames over noise): too few frames, or frames that barely differ
LIMITS, TYPICAL = (0.2, 0.6), 0.05


def test_misfit_is_said_only_after_the_residual_held_above_the_limit():
    guard = FitGuard()
    assert guard.judge(0.06, *ALIKE, LIMITS, TYPICAL, "m", 0.0).severity == 0
    first = guard.judge(0.3, *ALIKE, LIMITS, TYPICAL, "m", 1.0)
    assert first.severity == 1 and not first.misfit and first.message == ""
    held = guard.judge(0.3, *ALIKE, LIMITS, TYPICAL, "m", 1.0 + HOLD)
    assert held.misfit and "residual 0.30" in held.message and "usual 0.050" in held.message
    assert guard.judge(0.9, *ALIKE, LIMITS, TYPICAL, "m", 2.0 + HOLD).severity == 2
    cleared = guard.judge(0.1, *ALIKE, LIMITS, TYPICAL, "m", 3.0 + HOLD)
    assert cleared == Verdict(0, False, False, False, "")
    # the hold starts again after a clear
    assert not guard.judge(0.3, *ALIKE, LIMITS, TYPICAL, "m", 4.0 + HOLD).misfit


def test_pixels_that_are_no_counts_are_named_as_the_likely_cause():
    guard = FitGuard(hold=0.0)
    plain = guard.judge(0.9, *ALIKE, LIMITS, TYPICAL, "m", 0.0, not_counts=0.4)
    assert "no counts" not in plain.message  # fewer than one pixel a frame: not the cause
    named = guard.judge(0.9, *ALIKE, LIMITS, TYPICAL, "m", 0.0, not_counts=770.0)
    assert named.severity == 2 and "770 pixels of each are no counts" in named.message
    assert "ptychoedge train --mask" in named.message and "residual 0.90" in named.message
    assert len(named.message) <= 255  # Message_RBV's length
    assert guard.judge(0.1, *ALIKE, LIMITS, TYPICAL, "m", 1.0, not_counts=770.0).message == ""


def test_a_model_without_limits_is_guarded_by_the_fallback():
    guard = FitGuard(hold=0.0)
    assert guard.judge(FALLBACK_RESIDUAL_LIMITS[0] * 0.9, *ALIKE, None, None, "m",
                       0.0).severity == 0
    verdict = guard.judge(FALLBACK_RESIDUAL_LIMITS[1] * 1.1, *ALIKE, None, None, "m", 0.0)
    assert verdict.severity == 2 and verdict.misfit
    assert guard.judge(math.nan, *ALIKE, None, None, "m", 1.0).severity == 0


def test_one_answer_for_every_frame_is_a_misfit_though_the_residual_is_low():
    guard = FitGuard()
    differ = 2 * VARIES
    assert guard.judge(0.06, 0.25, differ, LIMITS, TYPICAL, "m", 0.0) == Verdict(
        0, False, False, False, "")
    first = guard.judge(0.06, 0.004, differ, LIMITS, TYPICAL, "m", 1.0)
    assert first.one_answer and first.severity == 0 and not first.misfit
    held = guard.judge(0.06, 0.004, differ, LIMITS, TYPICAL, "m", 1.0 + HOLD)
    assert held.misfit and held.one_answer and held.severity == 0
    assert "m's answers explain 0% of how the frames differ" in held.message
    assert "Refine" in held.message and "Adapt" in held.message
    # a share below zero (answers of the wrong frames) is said as none
    assert "explain 0%" in guard.judge(0.06, -0.2, differ, LIMITS, TYPICAL, "m",
                                       2.0 + HOLD).message
    # where both are out, the residual's reason is said: the instrument comes first
    both = guard.judge(0.3, 0.0, differ, LIMITS, TYPICAL, "m", 3.0 + HOLD)
    assert both.severity == 1 and both.one_answer and "residual 0.30" in both.message
    assert guard.judge(0.06, EXPLAINS * 1.5, differ, LIMITS, TYPICAL, "m",
                       4.0 + HOLD) == Verdict(0, False, False, False, "")


def test_the_share_is_not_judged_where_the_frames_barely_differ():
    """A stage at rest, or a weak sample: the frames differ about as much as their noise,
    and what share of that any image explains is noise itself."""
    guard = FitGuard(hold=0.0)
    assert guard.judge(0.06, 0.0, 0.9 * VARIES, LIMITS, TYPICAL, "m", 0.0) == Verdict(
        0, False, False, False, "")
    assert guard.judge(0.06, 0.0, VARIES, LIMITS, TYPICAL, "m", 1.0).one_answer


def test_neighbouring_images_that_disagree_are_a_misfit_where_enough_is_seen():
    """Each frame fits and the images tell the frames apart, but they disagree where they
    overlap: positions out of step with the frames, or images that are not the sample."""
    guard = FitGuard()
    differ, told_apart = 2 * VARIES, 0.25
    agreeing = {"agreement": 0.4, "overlaps": 200}
    assert guard.judge(0.06, told_apart, differ, LIMITS, TYPICAL, "m", 0.0,
                       **agreeing) == Verdict(0, False, False, False, "")
    apart = {"agreement": AGREES - 1.5, "overlaps": 200}
    first = guard.judge(0.06, told_apart, differ, LIMITS, TYPICAL, "m", 1.0, **apart)
    assert first.disagree and not first.one_answer and not first.misfit
    held = guard.judge(0.06, told_apart, differ, LIMITS, TYPICAL, "m", 1.0 + HOLD, **apart)
    assert held.misfit and held.disagree and held.severity == 0
    assert "neighbouring images disagree where they overlap (agreement -150%)" in held.message
    assert "positions" in held.message and len(held.message) <= 255
    # not judged over too few patches, nor where the frames barely differ
    few = guard.judge(0.06, told_apart, differ, LIMITS, TYPICAL, "m", 2.0 + HOLD,
                      agreement=-1.5, overlaps=OVERLAPS - 1)
    assert not few.disagree and not few.misfit
    alike = guard.judge(0.06, told_apart, 0.9 * VARIES, LIMITS, TYPICAL, "m", 3.0 + HOLD,
                        **apart)
    assert not alike.disagree
