"""The batcher says which frame it has held longest, so a gap at the collector is known
to be lost only once no instance holds a frame from it."""

import threading

import numpy as np

from ptychoedge.inference.batcher import Batcher, Frame


class HeldReconstructor:
    """Reconstructs nothing until `go` is set; each patch is the frame itself."""

    def __init__(self):
        self.go = threading.Event()

    def __call__(self, images):
        self.go.wait(10)
        stacked = np.stack(images)[:, None]
        return np.concatenate([stacked, stacked], axis=1), np.zeros(len(images))


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
