"""The input's frame rate as the meter reads it once a period, and refused frames told from
lost ones."""

import time

import numpy as np

from ptychoedge.iocs.instances import Instance, Report
from ptychoedge.iocs.meter import PAUSE_MIN, InputRate, Meter
from ptychoedge.pvdb.processors import InstanceCounts, InstanceStatus


def rates_read(frame_times: np.ndarray, until: float, period: float = 1.0) -> list[float]:
    """The rate read at each period, the input's latest id being how many frames it took."""
    meter = InputRate()
    return [meter.update(now, int(np.searchsorted(frame_times, now, side="right")))
            for now in np.arange(period, until, period)]


def test_a_steady_input_reads_its_rate():
    rates = rates_read(np.arange(0, 20, 1 / 7), 20)
    assert np.allclose(rates[1:], 7, atol=1.01)  # a period holds 7 or 8 frames


def test_a_slow_input_with_late_frames_never_reads_as_a_pause():
    # 1.75 Hz, each frame up to 0.6 s late (a loaded machine): periods with no new frame
    rng = np.random.default_rng(0)
    times = np.sort(np.arange(0, 60, 1 / 1.75) + rng.uniform(0, 0.6, 105))
    rates = rates_read(times, 60)[1:]
    assert min(rates) > 0
    assert abs(np.mean(rates) - 1.75) < 0.3


def test_a_pause_reads_zero_after_a_few_silent_intervals_and_the_next_stream_its_rate():
    times = np.concatenate([np.arange(0, 10, 1 / 5), np.arange(40, 50, 1 / 5)])
    meter, read = InputRate(), {}
    for now in np.arange(0.5, 50, 0.5):
        read[now] = meter.update(now, int(np.searchsorted(times, now, side="right")))
    last_frame = 9.8
    silent = [now for now, rate in read.items() if 10 <= now < 40 and rate == 0]
    assert silent and min(silent) - last_frame >= PAUSE_MIN  # not at the first empty period
    assert min(silent) - last_frame <= PAUSE_MIN + 1
    assert all(rate == 0 for now, rate in read.items() if 13 <= now < 40)
    assert abs(read[41.0] - 5) <= 2  # the first period of the next stream: not 5 frames / 30 s


def test_no_input_or_a_restarted_detector_reads_zero():
    meter = InputRate()
    meter.update(0.0, 100)
    assert meter.update(1.0, 110) == 10
    assert meter.update(2.0, None) == 0
    assert meter.update(3.0, 5) == 0  # the detector counts afresh
    assert meter.update(4.0, 15) == 10


def test_a_frame_never_stamped_neither_restarts_the_detector_nor_hides_its_last_id():
    # uniqueId 0 is a frame whose id was never set (the instances refuse it): the meter
    # must keep the detector's last id, which the refusals of that period are tied to
    meter = InputRate()
    meter.update(0.0, 10)
    assert meter.update(1.0, 30) == 20
    assert meter.update(2.0, 0) == 20
    assert meter.last_id == 30
    assert meter.update(3.0, 50) == 10  # 20 frames over the 2 s since id 30


def test_refusals_wait_for_their_gaps_when_the_detectors_id_was_read_late():
    # On a loaded machine an instance may report refusals of frames past the detector's id
    # as the IOC last read it: their gaps, shown one by one as the collector gives up on
    # each, are still errors, not lost frames.
    meter = Meter(ctx=None)
    instance = Instance("instance 1", "status", "control", "input")
    collector = Instance("collector", "status", "control", "input")

    def measure(detector_id: int, refused: int, gaps: int, collected_to: int) -> None:
        counts = InstanceCounts(published=12 - refused, errors=refused)
        instance.report = Report(1, 12, time.time(), 12, 0, 0, InstanceStatus(counts))
        collector.report = Report(1, collected_to, time.time(), 0, gaps, 0, None)
        meter.measure(detector_id, {1: instance}, collector)

    measure(5, refused=0, gaps=0, collected_to=1)
    measure(5, refused=6, gaps=0, collected_to=1)  # frames 2, 4, ..., 12 refused
    for gaps in range(1, 7):  # the collector waits at each gap in turn
        measure(12, refused=6, gaps=gaps, collected_to=2 * gaps + 1)
    assert meter.figures.frame_errors == 6
    assert meter.figures.frames_missed == 0
