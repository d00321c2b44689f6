"""Serves good and malformed NTNDArray frames on one channel, for the processor tests.

    python bad_frames_server.py CHANNEL GO_FILE

Waits for GO_FILE to exist (the consumer is connected), publishes the sequence
of `FRAMES`, waits a little for them to be taken, and exits.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pvaccess as pva

from ptychoedge.sim import physics
from ptychoedge.sim.ntndarray import make_frame

# (kind of fault or "good", how to make the frame) in publishing order
FRAMES = ["good", "rank", "too_small", "pixel_type", "empty", "good", "no_colormode_3d",
          "signed_ok", "good"]


def frame(kind: str, unique_id: int, good: np.ndarray) -> pva.NtNdArray:
    position = (1e-7 * unique_id, -1e-7 * unique_id)
    if kind == "good":
        return make_frame(good, unique_id, position)
    if kind == "signed_ok":  # signed integers are counts too
        return make_frame(good.astype(np.int32), unique_id, position)
    if kind == "too_small":
        return make_frame(good[:32, :32].copy(), unique_id, position)
    if kind == "pixel_type":
        return make_frame(good.astype(np.float32), unique_id, position)
    f = make_frame(good, unique_id, position)
    if kind == "empty":
        f["dimension"] = []
        f["value"] = {"ushortValue": np.zeros(0, np.uint16)}
    elif kind in ("rank", "no_colormode_3d"):
        n = good.shape[0]
        f["dimension"] = [pva.PvDimension(n // 2, 0, n // 2, 1, False),
                          pva.PvDimension(n, 0, n, 1, False), pva.PvDimension(2, 0, 2, 1, False)]
    return f


def main() -> None:
    channel, go_file = sys.argv[1], Path(sys.argv[2])
    good = physics.PtychographySimulator(128, seed=1).frames(np.zeros((1, 2)))[0][0]
    server = pva.PvaServer(channel, pva.NtNdArray())
    while not go_file.exists():
        time.sleep(0.05)
    for unique_id, kind in enumerate(FRAMES, start=1):
        server.update(channel, frame(kind, unique_id, good))
        time.sleep(0.05)
    time.sleep(3)
    server.stop()


if __name__ == "__main__":
    main()
