"""Serves the same frames raw, then compressed as NDPluginCodec does, then bad ones.

    python codec_frames_server.py CHANNEL GO_FILE [good|bad]

Waits for GO_FILE (the consumer is connected), publishes `FRAMES` raw frames, the
same frames once for each of `VARIANTS` and as floats for each of `FLOAT_CODECS`
(good), or one good frame and then each of `BAD` (bad), waits a little for them to be
taken, and exits.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pvaccess as pva
from codec_frames import BAD, FLOAT_CODECS, FRAMES, VARIANTS

from ptychoedge.sim import physics
from ptychoedge.sim.ntndarray import make_compressed_frame, make_frame


def diffraction(count: int) -> list[np.ndarray]:
    simulator = physics.PtychographySimulator(128, seed=3)
    return list(simulator.frames(physics.fermat_spiral_positions(count, 0.25e-6))[0])


def bad_frame(kind: str, unique_id: int, good: np.ndarray) -> pva.NtNdArray:
    codec, fault = kind.split("_")
    frame = make_compressed_frame(good, codec, unique_id)
    payload = np.asarray(frame["value"][0]["ubyteValue"]).copy()
    if fault == "corrupt":  # the header kept, the rest noise
        keep = 16 if codec == "blosc" else 4
        noise = np.random.default_rng(unique_id).integers(0, 256, payload.size, np.uint8)
        payload[keep:] = noise[keep:]
        frame["value"] = {"ubyteValue": payload}
    elif fault == "size":  # uncompressedSize disagrees with the data
        frame["uncompressedSize"] = good.nbytes // 2
    elif fault == "bomb":  # a size past anything the frame could hold
        frame["uncompressedSize"] = 2**40
    return frame


def main() -> None:
    channel, go_file = sys.argv[1], Path(sys.argv[2])
    images = diffraction(FRAMES)
    if sys.argv[3:] == ["bad"]:
        sequence = [make_frame(images[0], 1)] + [
            bad_frame(kind, unique_id, images[0]) for unique_id, kind in enumerate(BAD, 2)]
    else:
        sequence = [make_frame(image, 0) for image in images]
        for codec, blosc in VARIANTS:
            sequence += [make_compressed_frame(image, codec, **blosc) for image in images]
        noise = np.random.default_rng(0).uniform(-0.4, 0.4, images[0].shape)
        for codec in FLOAT_CODECS:
            sequence += [make_compressed_frame((image + noise).astype(np.float32), codec)
                         for image in images]
    server = pva.PvaServer(channel, pva.NtNdArray())
    while not go_file.exists():
        time.sleep(0.05)
    for unique_id, frame in enumerate(sequence, start=1):
        frame["uniqueId"] = unique_id
        server.update(channel, frame)
        time.sleep(0.02)
    time.sleep(3)
    server.stop()


if __name__ == "__main__":
    main()
