"""The frames of the scan, kept as they pass, for adaptation to learn from.

A pvAccess monitor of the detector's image beside the inference instances: it is no
member of their distributor group, so the server sends it every frame as well and it
takes none from them. It keeps the last `--frames` decoded frames with their scan
positions (the PosX and PosY attributes, m) in memory, and answers commands on stdin,
one a line, on stdout:

    write PATH   the kept frames as a CXI scan with the model's instrument (what
                 `ptychoedge adapt --scan` reads)  -> "wrote PATH N FIRST LAST" (uniqueIds)
    clear        forget the kept frames (a new scan)  -> "cleared"
    count        -> "count N MISSED" (gaps in the uniqueIds: frames never delivered)

pvapy, so a process of its own: never with softioc or p4p.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import threading
from pathlib import Path

import numpy as np
import pvaccess as pva

from ptychoedge.inference.frames import decode_frame
from ptychoedge.inference.instrument import write_cxi
from ptychoedge.inference.manifest import MODEL_DIR, ModelError, load_manifest
from ptychoedge.inference.preprocess import FrameError

log = logging.getLogger("ptychoedge.frame_ring")


class FrameRing:
    def __init__(self, image_pv: str, capacity: int):
        self._frames: collections.deque = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.refused = 0
        self.last_id = 0
        self.missed = 0  # gaps in the uniqueIds: frames the monitor never delivered
        self.channel = pva.Channel(image_pv, pva.PVA)
        self.channel.monitor(self._keep, "field()")

    def _keep(self, image) -> None:
        unique_id = image["uniqueId"]
        try:
            frame = decode_frame(image)
            attributes = {a["name"]: a["value"][0]["value"] for a in image["attribute"]}
            position = (float(attributes["PosX"]), float(attributes["PosY"]))
        except (FrameError, KeyError, IndexError, TypeError, ValueError):
            self.refused += 1  # the instances count and report these frames by kind
            return
        with self._lock:
            if self.last_id and unique_id > self.last_id + 1:
                self.missed += unique_id - self.last_id - 1
            self.last_id = unique_id
            self._frames.append((unique_id, frame, position))

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uniqueIds (n,), frames (n, ny, nx) and positions (n, 2) m, oldest first."""
        with self._lock:
            kept = list(self._frames)
        if not kept:
            return np.zeros(0, int), np.zeros((0, 0, 0)), np.zeros((0, 2))
        ids, frames, positions = zip(*kept, strict=True)
        return np.array(ids), np.stack(frames), np.array(positions)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self.last_id = 0

    def close(self) -> None:
        self.channel.stopMonitor()


def answer(ring: FrameRing, line: str, model: str, model_dir: Path) -> str:
    command, _, argument = line.strip().partition(" ")
    if command == "count":
        return f"count {len(ring.snapshot()[0])} {ring.missed}"
    if command == "clear":
        ring.clear()
        return "cleared"
    if command == "write" and argument:
        ids, frames, positions = ring.snapshot()
        if not len(ids):
            return "error no frames kept yet"
        try:
            instrument = load_manifest(model, model_dir).instrument
            write_cxi(Path(argument), instrument, frames, positions)
        except (ModelError, ValueError, OSError) as error:
            return f"error {error}"
        return f"wrote {argument} {len(ids)} {ids[0]} {ids[-1]}"
    return f"error unknown command {line.strip()!r}: write PATH, clear or count"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge-frame-ring",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="the detector's image PV")
    parser.add_argument("--frames", type=int, default=2000, help="how many frames to keep")
    parser.add_argument("--model", required=True, help="whose instrument a written scan has")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s frame-ring %(message)s")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    ring = FrameRing(args.image, args.frames)
    log.info("keeping the last %d frames of %s", args.frames, args.image)
    try:
        for line in sys.stdin:  # the parent closes stdin to stop it
            if line.strip():
                print(answer(ring, line, args.model, args.model_dir), flush=True)
    finally:
        ring.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
