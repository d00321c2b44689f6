"""Serves good and malformed NTNDArray frames on one channel, for the processor tests.

    python bad_frames_server.py CHANNEL GO_FILE [basic|faults]

Waits for GO_FILE to exist (the consumer is connected), publishes the sequence
of `FRAMES` (or of `FAULT_FRAMES`), waits a little for them to be taken, and exits.
"""

import sys
import time
from pathlib import Path

import lz4.block
import numpy as np
import pvaccess as pva
from bad_frames import FAULT_FRAMES, FRAMES

from ptychoedge.sim import physics
from ptychoedge.sim.ntndarray import make_frame

HUGE = 8192  # px: a real 8192x8192 frame, 64 MB of uint8


def frame(kind: str, unique_id: int, good: np.ndarray) -> pva.NtNdArray:
    position = (1e-7 * unique_id, -1e-7 * unique_id)
    if kind == "good":
        return make_frame(good, unique_id, position)
    if kind == "signed_ok":  # signed integers are counts too
        return make_frame(good.astype(np.int32), unique_id, position)
    if kind == "too_small":
        return make_frame(good[:32, :32].copy(), unique_id, position)
    if kind == "pixel_type":  # floats in another unit than photons
        return make_frame((good / 1e4).astype(np.float32), unique_id, position)
    if kind == "float_ok":  # counts as NDProcess sends them, a dark subtracted
        noise = np.random.default_rng(unique_id).uniform(-0.3, 0.3, good.shape)
        return make_frame(good + noise, unique_id, position)
    if kind == "boolean_pixels":
        f = make_frame(good, unique_id, position)
        f["value"] = {"booleanValue": (good > 0).ravel()}
        return f
    if kind == "signed16_ok":
        return make_frame(good.astype(np.int16), unique_id, position)
    if kind == "huge_ok":  # valid, if large: the model takes its centre
        big = np.zeros((HUGE, HUGE), np.uint8)
        top = (HUGE - good.shape[0]) // 2
        big[top:top + good.shape[0], top:top + good.shape[1]] = np.minimum(good, 255)
        return make_frame(big, unique_id, position)
    if kind == "no_attributes_ok":  # no ColorMode, no scan position: reconstructed, not placed
        f = make_frame(good, unique_id)
        f["attribute"] = []
        return f
    if kind == "no_unique_id":  # never stamped: uniqueId keeps its default, 0
        f = make_frame(good, 0, position)
        f["uniqueId"] = 0
        return f
    f = make_frame(good, unique_id, position)
    if kind == "empty":
        f["dimension"] = []
        f["value"] = {"ushortValue": np.zeros(0, np.uint16)}
    elif kind in ("rank", "no_colormode_3d"):
        n = good.shape[0]
        f["dimension"] = [pva.PvDimension(n // 2, 0, n // 2, 1, False),
                          pva.PvDimension(n, 0, n, 1, False), pva.PvDimension(2, 0, 2, 1, False)]
    elif kind == "rank_1d":
        f["dimension"] = [pva.PvDimension(good.size, 0, good.size, 1, False)]
    elif kind == "zero_size":
        f["dimension"] = [pva.PvDimension(128, 0, 128, 1, False),
                          pva.PvDimension(0, 0, 0, 1, False)]
        f["value"] = {"ushortValue": np.zeros(0, np.uint16)}
    elif kind == "huge_claimed":  # a header claiming 100,000 x 100,000 pixels
        f["dimension"] = [pva.PvDimension(100_000, 0, 100_000, 1, False),
                          pva.PvDimension(100_000, 0, 100_000, 1, False)]
    elif kind == "size_mismatch":  # 128 x 128 pixels under a 128 x 100 header
        f["dimension"] = [pva.PvDimension(128, 0, 128, 1, False),
                          pva.PvDimension(100, 0, 100, 1, False)]
    elif kind in ("lz4_garbage", "unknown_codec", "lz4_bomb"):
        payload = np.frombuffer(lz4.block.compress(good.tobytes(), store_size=False), np.uint8)
        if kind == "lz4_garbage":
            payload = np.random.default_rng(unique_id).integers(0, 256, payload.size, np.uint8)
        f["value"] = {"ubyteValue": payload}
        f["codec"] = {"name": "no-such-codec" if kind == "unknown_codec" else "lz4",
                      "parameters": pva.PvInt(int(pva.USHORT))}
        f["compressedSize"] = payload.size
        f["uncompressedSize"] = 2**40 if kind == "lz4_bomb" else good.nbytes
    return f


def main() -> None:
    channel, go_file = sys.argv[1], Path(sys.argv[2])
    sequence = FRAMES
    if sys.argv[3:] == ["faults"]:
        sequence = [kind for bad in FAULT_FRAMES for kind in ("good", bad)] + ["good"]
    good = physics.PtychographySimulator(128, seed=1).frames(np.zeros((1, 2)))[0][0]
    server = pva.PvaServer(channel, pva.NtNdArray())
    while not go_file.exists():
        time.sleep(0.05)
    for unique_id, kind in enumerate(sequence, start=1):
        server.update(channel, frame(kind, unique_id, good))
        time.sleep(0.05)
    time.sleep(3)
    server.stop()


if __name__ == "__main__":
    main()
