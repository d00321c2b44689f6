"""The automatic-scaling policy, fed measurements as the supervisor would feed them."""

from __future__ import annotations

from ptychoedge.iocs.autoscaler import Autoscaler, Observation

FRAME_TIME = 0.004  # s per frame: one instance holds 250 Hz flat out


def seen(rate: float, instances: int, overdue: int = 0, backlog: int = 0) -> Observation:
    """What a pipeline of `instances` shows at `rate`: each holds at most 200 Hz."""
    processed = min(rate, 200.0 * instances)
    return Observation(input_rate=rate, processed_rate=processed, overdue=overdue,
                       backlog=backlog, instances=instances, busy=processed * FRAME_TIME,
                       frame_time=FRAME_TIME)


def test_losing_frames_scales_up_by_the_shortfall():
    scaler = Autoscaler(max_instances=8)
    decision = scaler.decide(0.0, seen(700, 1, overdue=500))
    assert decision.instances == 4  # 700 Hz at the 200 Hz one instance managed
    assert "500 frames late or lost" in decision.reason


def test_never_beyond_the_maximum():
    scaler = Autoscaler(max_instances=2)
    decision = scaler.decide(0.0, seen(2000, 2, overdue=100))
    assert decision.instances == 2 and "maximum" in decision.reason


def test_a_growing_backlog_scales_up_before_frames_are_lost():
    scaler = Autoscaler()
    decisions = [scaler.decide(t, seen(300, 1, backlog=200 * (t + 1))) for t in range(5)]
    assert [d.instances for d in decisions[:4]] == [1] * 4  # a few periods may be a fluke
    assert decisions[4].instances >= 2 and "backlog" in decisions[4].reason


def test_a_status_report_a_period_late_does_not_hide_a_growing_backlog():
    """One period's report came late: the backlog looks flat, then jumps. The pipeline is
    still falling behind, and scales up as soon as it would have without the late report."""
    scaler = Autoscaler()
    backlogs = [200, 400, 400, 800, 1000]
    decisions = [scaler.decide(t, seen(300, 1, backlog=b)) for t, b in enumerate(backlogs)]
    assert [d.instances for d in decisions[:4]] == [1] * 4
    assert decisions[4].instances >= 2 and "backlog" in decisions[4].reason


def test_a_steady_small_backlog_is_not_falling_behind():
    scaler = Autoscaler()
    for t in range(20):
        assert scaler.decide(t, seen(300, 2, backlog=30 + t % 3)).instances == 2


def test_scales_down_only_after_calm_and_only_at_a_pause():
    scaler = Autoscaler(calm=5.0)
    for t in range(4):
        assert scaler.decide(t, seen(100, 3)).instances == 3  # not calm long enough
    decision = scaler.decide(10, seen(100, 3))
    assert decision.instances == 3 and "next pause" in decision.reason
    paused = scaler.decide(11, seen(0, 3))
    assert paused.instances == 2 and "scaling down" in paused.reason


def test_does_not_return_to_a_count_that_lost_frames():
    """One instance lost frames in a burst at 150 Hz, a rate that keeps one only 0.6 busy,
    below the headroom: only the memory of the loss keeps two."""
    scaler = Autoscaler(calm=2.0)
    assert scaler.decide(0, seen(150, 1, overdue=20)).instances == 2
    for t in range(1, 30):  # the same rate: 1 lost frames at it, so 2 stay
        decision = scaler.decide(t, seen(150, 2))
        assert decision.instances == 2
    assert "1 lost frames at 150 Hz" in decision.reason
    assert scaler.decide(31, seen(0, 2)).instances == 2
    for t in range(32, 40):  # far below that rate, one would do again
        scaler.decide(t, seen(100, 2))
    assert scaler.decide(41, seen(0, 2)).instances == 1


def test_before_frames_flow_enough_for_the_target_rate():
    scaler = Autoscaler(target_rate=600, headroom=0.75)
    decision = scaler.decide(0, seen(0, 1))
    assert decision.instances == 4  # 600 Hz x 4 ms = 2.4 busy, at most 0.75 each
    assert "target" in decision.reason


def test_hysteresis_keeps_a_count_that_lost_frames_until_the_rate_falls_by_its_margin():
    """One instance lost frames in a burst at 150 Hz, though 150 Hz keeps it only 0.6 busy:
    the headroom allows one again at once, the hysteresis (10 %) not above 135 Hz."""
    scaler = Autoscaler(calm=2.0, hysteresis=0.1, headroom=0.75)
    assert scaler.decide(0, seen(150, 1, overdue=30)).instances == 2
    for t in range(1, 10):
        decision = scaler.decide(t, seen(140, 2))  # below the rate that lost, within 10 %
        assert decision.instances == 2
    assert "1 lost frames at 150 Hz" in decision.reason
    assert scaler.decide(10, seen(0, 2)).instances == 2  # the pause: still two
    for t in range(11, 20):
        decision = scaler.decide(t, seen(130, 2))  # 13 % below: one would do again
    assert "1 would do" in decision.reason
    assert scaler.decide(20, seen(0, 2)).instances == 1


def test_no_scaling_down_while_one_fewer_would_run_above_the_headroom():
    """Three instances keeping up at 400 Hz (1.6 instances busy): two would run at 0.8 each,
    above the headroom of 0.75, so three stay, after any calm and at a pause."""
    scaler = Autoscaler(calm=2.0, headroom=0.75)
    for t in range(10):
        decision = scaler.decide(t, seen(400, 3))
        assert decision.instances == 3
    assert "1.60 instances busy" in decision.reason
    assert scaler.decide(10, seen(0, 3)).instances == 3
    at_350 = Autoscaler(calm=2.0, headroom=0.75)  # 1.4 busy: two at 0.7 each would do
    for t in range(10):
        at_350.decide(t, seen(350, 3))
    assert at_350.decide(10, seen(0, 3)).instances == 2


def test_a_large_growing_backlog_while_keeping_up_is_not_falling_behind():
    """The backlog grows (status reports come late on a busy machine) but as many frames
    come out as go in: no scaling up."""
    scaler = Autoscaler()
    for t in range(12):
        assert scaler.decide(t, seen(300, 2, backlog=200 * (t + 1))).instances == 2


def test_a_small_growing_backlog_is_frames_in_flight():
    """Fewer frames come out than go in and the backlog grows, but stays under half a
    second of input (150 frames at 300 Hz): frames in flight, no scaling up."""
    scaler = Autoscaler()
    for t in range(12):
        assert scaler.decide(t, seen(300, 1, backlog=10 * (t + 1))).instances == 1
