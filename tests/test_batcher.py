"""The batcher says which frame it has held longest, so a gap at the collector is known
to be lost only once no instance holds a frame from it; and how much of its latest frames'
variation the answers explain."""

import threading

import numpy as np

from ptychoedge.inference.batcher import SPREAD_BLOCK, SPREAD_WINDOW, Batcher, BatchResult, Frame
from ptychoedge.inference.quality import Fit
from ptychoedge.sim import physics
from ptychoedge.sim.samples import named_sample


class HeldReconstructor:
    """Reconstructs nothing until `go` is set; each patch is the frame itself."""

    def __init__(self):
        self.go = threading.Event()
        self.working = threading.Event()  # set once it holds a batch

    def __call__(self, images):
        self.working.set()
        self.go.wait(10)
        stacked = np.stack(images)[:, None]
        patches = np.concatenate([stacked, stacked], axis=1)
        side = stacked.shape[-1]
        return BatchResult(patches, *Fit(np.ones((1, side, side), np.complex64))(
            np.stack(images), patches[:, 0], patches[:, 1]), np.zeros(len(images)))


def test_the_oldest_frame_waiting_is_the_first_of_the_batch_at_work():
    reconstructor, published = HeldReconstructor(), []
    batcher = Batcher(reconstructor, published.append, batch_size=2, max_wait=0.0)
    assert batcher.oldest_waiting == 0
    for unique_id in (7, 8, 9):
        batcher.submit(Frame(np.ones((4, 4), np.float32), unique_id))
    # frame 7 is in a batch held by the reconstructor, 8 and 9 wait behind it
    assert batcher.oldest_waiting == 7
    reconstructor.go.set()
    batcher.stop()
    assert [result.frame.unique_id for result in published] == [7, 8, 9]
    assert batcher.oldest_waiting == 0
    assert batcher.stats()["oldestWaiting"] == 0


class KnownAnswers:
    """Answers frames by their index in a scan: the true patch, or one patch for all."""

    def __init__(self, probe, truth, one_answer: bool):
        self.fit, self.truth, self.one_answer = Fit(probe), truth, one_answer

    def __call__(self, images):
        index = [int(image[0, 0]) for image in images]  # the test writes it there
        frames = np.stack([image[1:] for image in images])
        patches = self.truth[[0] * len(index) if self.one_answer else index]
        answers = np.stack([np.abs(patches), np.angle(patches)], axis=1)
        return BatchResult(answers, *self.fit(frames, answers[:, 0], answers[:, 1]),
                           np.zeros(len(images)))


def test_the_share_of_the_frames_variation_explained_is_said_over_the_latest_frames():
    simulator = physics.PtychographySimulator(32, seed=0, sample=named_sample(
        "labyrinth", (256, 256), 0))
    frames, truth = simulator.frames(physics.fermat_spiral_positions(SPREAD_WINDOW + 64,
                                                                     0.25e-6))
    probe = simulator.instrument().probe
    tagged = np.zeros((len(frames), 33, 32), np.float32)  # row 0 carries the frame's index
    tagged[:, 0, 0], tagged[:, 1:] = np.arange(len(frames)), frames

    def run(one_answer: bool, count: int) -> Batcher:
        batcher = Batcher(KnownAnswers(probe, truth, one_answer), lambda result: None,
                          batch_size=5, max_wait=0.0)
        for index in range(count):
            batcher.submit(Frame(tagged[index], index + 1))
        batcher.stop()
        return batcher

    true, one = run(False, len(frames)), run(True, len(frames))
    assert true.stats()["framesOverNoise"] > 10 and one.stats()["framesOverNoise"] > 10
    assert true.stats()["explained"] > 0.8 and abs(one.stats()["explained"]) < 0.01
    # over the latest window only, however long the scan
    kept = sum(spread.frames for spread in true.spreads)
    assert SPREAD_WINDOW <= kept < SPREAD_WINDOW + SPREAD_BLOCK
    # said from a block of frames on; a new model's share starts again
    assert run(False, SPREAD_BLOCK - 1).stats()["explained"] == 0.0
    assert run(False, SPREAD_BLOCK + 5).stats()["explained"] > 0.8
    true.swap(KnownAnswers(probe, truth, True))
    assert true.stats()["explained"] == 0.0 and true.stats()["framesOverNoise"] == 0.0


def test_a_batch_the_old_model_finishes_after_a_swap_is_published_and_kept_out_of_the_fit():
    """A model of another patch size swapped in while the old one works on a batch: that
    batch is published, the batcher goes on with the new model, and what it says of the fit
    is the new model's alone (the old batch's sums, another size, would not even add)."""
    old, published = HeldReconstructor(), []
    batcher = Batcher(old, published.append, batch_size=4, max_wait=0.0)
    for unique_id in range(1, 5):
        batcher.submit(Frame(np.ones((4, 4), np.float32), unique_id))
    assert old.working.wait(10)
    new = HeldReconstructor()
    new.go.set()
    batcher.swap(new)  # the old model holds its batch of 4x4 frames meanwhile
    old.go.set()
    for unique_id in range(5, 5 + SPREAD_BLOCK + 4):
        batcher.submit(Frame(np.full((8, 8), unique_id, np.float32), unique_id))
    batcher.stop()
    assert [result.frame.unique_id for result in published] == list(range(1, 9 + SPREAD_BLOCK))
    assert {spread.measured.shape for spread in batcher.spreads} == {(8, 8)}
    assert sum(spread.frames for spread in batcher.spreads) == SPREAD_BLOCK + 4


def test_a_fault_after_inference_costs_its_batch_not_the_frames_after_it():
    """A fault of ours in one batch (here, one residual too few) costs that batch, counted
    as errors; the batcher goes on with the next (the swap fault above once killed its
    thread, and every later frame was lost)."""
    calls = []

    def faulty_once(images):
        calls.append(len(images))
        stacked = np.stack(images)[:, None]
        patches = np.concatenate([stacked, stacked], axis=1)
        residuals, spread = Fit(np.ones((1, 4, 4), np.complex64))(
            np.stack(images), patches[:, 0], patches[:, 1])
        return BatchResult(patches, residuals[:-1] if len(calls) == 1 else residuals, spread,
                           np.zeros(len(images)))

    published = []
    batcher = Batcher(faulty_once, published.append, batch_size=2, max_wait=0.0)
    batcher.submit(Frame(np.ones((4, 4), np.float32), 1))
    batcher.submit(Frame(np.ones((4, 4), np.float32), 2))
    while not calls:  # the faulty batch taken before the next frames arrive
        threading.Event().wait(0.01)
    for unique_id in range(3, 7):
        batcher.submit(Frame(np.ones((4, 4), np.float32), unique_id))
    batcher.stop()
    assert [result.frame.unique_id for result in published][-4:] == [3, 4, 5, 6]
    assert batcher.stats()["errors_inference"] == calls[0]
