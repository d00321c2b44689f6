"""The frames of the scan, kept as they pass, for adaptation to learn from.

A pvAccess monitor of the detector's image beside the inference instances: it is no
member of their distributor group, so the server sends it every frame as well and it
takes none from them. It keeps the last `--frames` decoded frames of the current scan
with their scan positions (the PosX and PosY attributes, m) in memory (a uniqueId lower
than the last starts a new scan, as for the collector), and serves one record,
`--channel` (RING_FIELDS), to be told what to do: a put of `command` with a new
`request` number is answered in the same record, with that number in `answered`:

    write   the kept frames to `path` as a CXI scan (what `ptychoedge adapt --scan`
            reads) with the instrument in the CXI file `instrument`, or where that is
            "" the instrument of `model`: `written` frames, uniqueIds `first`..`last`
    clear   forget the kept frames (a new scan)

`error` says why a request failed, "" when it did not. `kept` and `missed` (gaps in
the uniqueIds: frames the monitor never delivered) are refreshed once a second.
pvapy, so a process of its own: never with softioc or p4p.
"""

from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pvaccess as pva

from ptychoedge.inference.frames import decode_frame
from ptychoedge.inference.instrument import read_cxi, write_cxi
from ptychoedge.inference.manifest import MODEL_DIR, load_manifest
from ptychoedge.inference.preprocess import FrameError

log = logging.getLogger("ptychoedge.frame_ring")
RING_FIELDS = {"command": pva.STRING, "path": pva.STRING, "model": pva.STRING,
               "instrument": pva.STRING, "request": pva.UINT,
               "answered": pva.UINT, "error": pva.STRING, "written": pva.UINT,
               "first": pva.ULONG, "last": pva.ULONG, "kept": pva.UINT, "missed": pva.ULONG}


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
            if unique_id <= self.last_id:  # the detector started again: a new scan
                self._frames.clear()
            elif self.last_id and unique_id > self.last_id + 1:
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

    def __len__(self) -> int:
        return len(self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self.last_id = 0

    def close(self) -> None:
        self.channel.stopMonitor()


def answer(ring: FrameRing, command: str, path: str, instrument: str, model: str,
           model_dir: Path) -> dict:
    """Do `command`; the record's fields that say how it went."""
    if command == "clear":
        ring.clear()
        return {"error": ""}
    if command != "write" or not path:
        return {"error": f"unknown command {command!r} (write with a path, or clear)"}
    ids, frames, positions = ring.snapshot()
    if not len(ids):
        return {"error": "no frames kept yet"}
    try:
        known = read_cxi(instrument) if instrument else load_manifest(model, model_dir).instrument
        write_cxi(Path(path), known, frames, positions)
    except (ValueError, OSError) as error:  # ModelError and InstrumentError among them
        return {"error": str(error)}
    return {"error": "", "written": len(ids), "first": int(ids[0]), "last": int(ids[-1])}


class RingRecord:
    """The record that takes requests and shows the ring's state."""

    def __init__(self, channel: str, ring: FrameRing, model_dir: Path):
        self.channel, self.ring, self.model_dir = channel, ring, model_dir
        self.record = pva.PvObject(RING_FIELDS, {"command": "", "path": "", "model": "",
                                                 "instrument": ""})
        self.server = pva.PvaServer()
        self.server.addRecord(channel, self.record, self._request)

    def _request(self, written) -> None:
        request = written["request"]
        if request == self.record["answered"]:
            return  # the echo of an answer, or a request already done
        outcome = answer(self.ring, written["command"], written["path"],
                         written["instrument"], written["model"], self.model_dir)
        self._show(answered=request, **outcome)

    def _show(self, **fields) -> None:
        self.record.set({"kept": len(self.ring), "missed": self.ring.missed, **fields})
        self.server.update(self.channel, self.record)

    def refresh(self) -> None:
        self._show()

    def close(self) -> None:
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge-frame-ring",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="the detector's image PV")
    parser.add_argument("--channel", required=True, help="the record to serve")
    parser.add_argument("--frames", type=int, default=2000, help="how many frames to keep")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="where the models named in requests are")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s frame-ring %(message)s")
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    ring = FrameRing(args.image, args.frames)
    record = RingRecord(args.channel, ring, args.model_dir)
    log.info("keeping the last %d frames of %s; requests at %s", args.frames, args.image,
             args.channel)
    while not quit_event.wait(1.0):
        record.refresh()
    ring.close()
    record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
