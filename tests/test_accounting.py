"""Frame accounting: counters across restarts, refused frames told from lost ones."""

import math

from ptychoedge.iocs.accounting import (
    REFUSAL_PATIENCE,
    SILENCE_PATIENCE,
    Counter,
    OverdueFrames,
    RefusedFrames,
)


def test_a_counter_keeps_its_total_across_a_childs_restart():
    counter = Counter()
    assert counter.add("a", 10) == 10
    assert counter.add("a", 15) == 5
    assert counter.add("a", 3) == 3  # restarted: counts from 0 again
    assert counter.add("b", 4) == 4
    assert counter.total == 22
    counter.reset()
    assert counter.add("a", 5) == 2 and counter.total == 2


def test_refused_frames_explain_the_gaps_they_leave_later_and_only_those():
    refused = RefusedFrames()
    refused.refused(0.0, input_id=100, frames=3)
    assert refused.lost(1.0, gaps=0, collected_to=90) == 0  # the gaps come 5 s later
    assert refused.lost(6.0, gaps=2, collected_to=98) == 0
    assert refused.lost(7.0, gaps=4, collected_to=99) == 3  # one refusal left, three lost
    assert refused.lost(8.0, gaps=1, collected_to=99) == 1  # nothing waits any more


def test_a_refusal_whose_gap_never_comes_stops_waiting():
    passed, expired = RefusedFrames(), RefusedFrames()
    passed.refused(0.0, input_id=50, frames=1)
    assert passed.lost(1.0, gaps=0, collected_to=60) == 0  # the collector is past its id
    assert passed.lost(2.0, gaps=1, collected_to=61) == 1
    expired.refused(0.0, input_id=50, frames=1)
    assert expired.lost(REFUSAL_PATIENCE + 1, gaps=0, collected_to=None) == 0
    assert expired.lost(REFUSAL_PATIENCE + 2, gaps=1, collected_to=None) == 1


def test_a_refusal_stops_waiting_once_the_collector_reached_its_input_id():
    """The refused frame came before the detector's id of its time: a collector at that id
    has passed its gap, which will not show any more."""
    refused = RefusedFrames()
    refused.refused(0.0, input_id=50, frames=1)
    assert refused.lost(1.0, gaps=0, collected_to=49) == 0  # not there yet: it waits
    assert refused.lost(1.5, gaps=0, collected_to=50) == 0
    assert refused.lost(2.0, gaps=1, collected_to=51) == 1  # a later gap is a lost frame


def test_reset_forgets_the_refusals():
    refused = RefusedFrames()
    refused.refused(0.0, input_id=100, frames=2)
    assert refused.lost(1.0, gaps=1, collected_to=90) == 0
    refused.reset()
    assert refused.lost(2.0, gaps=1, collected_to=95) == 1  # the refusal left went with it


def test_a_refusal_of_no_frames_explains_no_gap():
    refused = RefusedFrames()
    refused.refused(0.0, input_id=10, frames=0)
    refused.refused(0.0, input_id=10, frames=-2)  # a counter read backwards, say
    assert refused.lost(1.0, gaps=2, collected_to=5) == 2


def test_a_gap_filled_by_late_frames_is_never_lost():
    overdue = OverdueFrames()
    overdue.gave_up(0.0, frames=40, collected_to=500)
    overdue.settle(1.0, floor=460)  # an instance still holds frame 460: it may come
    assert (overdue.lost, overdue.pending) == (0, 40)
    overdue.came_late(25)
    overdue.settle(2.0, floor=480)
    overdue.came_late(15)
    overdue.settle(3.0, floor=math.inf)
    assert (overdue.lost, overdue.pending) == (0, 0)


def test_a_gap_is_lost_once_no_instance_can_deliver_it():
    overdue = OverdueFrames()
    overdue.gave_up(0.0, frames=3, collected_to=500)
    overdue.gave_up(1.0, frames=2, collected_to=700)
    overdue.came_late(1)  # fills the oldest gap first
    overdue.settle(2.0, floor=600)  # every instance is past 500, not yet past 700
    assert (overdue.lost, overdue.pending) == (2, 2)
    overdue.settle(3.0, floor=701)
    assert (overdue.lost, overdue.pending) == (4, 0)


def test_a_gap_waits_for_a_silent_instance_only_so_long():
    overdue = OverdueFrames()
    overdue.gave_up(0.0, frames=5, collected_to=100)
    overdue.settle(SILENCE_PATIENCE - 1, floor=-math.inf)  # an instance does not answer
    assert overdue.lost == 0
    overdue.settle(SILENCE_PATIENCE, floor=-math.inf)
    assert (overdue.lost, overdue.pending) == (5, 0)
    overdue.came_late(2)  # later still than that: taken back from the lost
    assert overdue.lost == 3
    overdue.came_late(9)
    assert overdue.lost == 0
    overdue.reset()
    assert (overdue.lost, overdue.pending) == (0, 0)
