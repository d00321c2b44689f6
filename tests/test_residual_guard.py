"""The residual guard's rule: the alarm follows the limits at once, the misfit state and
its message only after the residual held above MINOR, and both clear below it."""

from ptychoedge.iocs.residual_guard import HOLD, ResidualGuard
from ptychoedge.pvdb.processors import FALLBACK_RESIDUAL_LIMITS


def test_misfit_is_said_only_after_the_residual_held_above_the_limit():
    guard = ResidualGuard()
    limits, typical = (0.2, 0.6), 0.05
    assert guard.judge(0.06, limits, typical, "m", 0.0).severity == 0
    first = guard.judge(0.3, limits, typical, "m", 1.0)
    assert first.severity == 1 and not first.misfit and first.message == ""
    held = guard.judge(0.3, limits, typical, "m", 1.0 + HOLD)
    assert held.misfit and "residual 0.30" in held.message and "usual 0.050" in held.message
    assert guard.judge(0.9, limits, typical, "m", 2.0 + HOLD).severity == 2
    cleared = guard.judge(0.1, limits, typical, "m", 3.0 + HOLD)
    assert cleared == cleared.__class__(0, False, "")
    # the hold starts again after a clear
    assert not guard.judge(0.3, limits, typical, "m", 4.0 + HOLD).misfit


def test_a_model_without_limits_is_guarded_by_the_fallback():
    guard = ResidualGuard(hold=0.0)
    assert guard.judge(FALLBACK_RESIDUAL_LIMITS[0] * 0.9, None, None, "m", 0.0).severity == 0
    verdict = guard.judge(FALLBACK_RESIDUAL_LIMITS[1] * 1.1, None, None, "m", 0.0)
    assert verdict.severity == 2 and verdict.misfit
    assert guard.judge(float("nan"), None, None, "m", 1.0).severity == 0
