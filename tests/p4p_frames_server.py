"""Serves simulated frames from a p4p server (no pvDatabase, so no pvapy distributor).

    python p4p_frames_server.py CHANNEL RATE_HZ FRAMES GO_FILE

Waits for GO_FILE to exist, then publishes FRAMES frames of a Fermat-spiral scan at
RATE_HZ with uniqueId from 1 and PosX/PosY attributes, then serves the last one until
interrupted: a detector behind a server that cannot share frames out.
"""

import sys
import time
from pathlib import Path

import numpy as np
from p4p.nt import NTNDArray
from p4p.server import Server
from p4p.server.thread import SharedPV

from ptychoedge.sim import physics


def main() -> None:
    channel, rate, count, go_file = (sys.argv[1], float(sys.argv[2]), int(sys.argv[3]),
                                     Path(sys.argv[4]))
    positions = physics.fermat_spiral_positions(count, 0.25e-6)
    frames, _ = physics.PtychographySimulator(128).frames(positions)
    nt = NTNDArray()
    pv = SharedPV(initial=nt.wrap(np.zeros((128, 128), np.uint16)))
    with Server(providers=[{channel: pv}]):
        while not go_file.exists():
            time.sleep(0.05)
        started = time.monotonic()
        for unique_id, (frame, (x, y)) in enumerate(zip(frames, positions, strict=True), 1):
            value = nt.wrap(frame, attrib={"PosX": float(x), "PosY": float(y)})
            value["uniqueId"] = unique_id
            time.sleep(max(0.0, started + unique_id / rate - time.monotonic()))
            pv.post(value)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
