"""The simulated detector's control IOC: areaDetector `cam1:` records in softioc.

Settings answer `caput` and `pvput` alike and refuse values outside the spec.
The frames themselves come from the image server process, which follows these
settings; its status channel is mirrored here into the `_RBV` records, as an
areaDetector driver updates its readbacks.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from p4p.client.thread import Context
from softioc import asyncio_dispatcher, builder, softioc

from ptychoedge.pvdb import detector, records
from ptychoedge.pvdb.spec import PvSpec

log = logging.getLogger("ptychoedge.sim.detector_ioc")

# Readbacks the image server owns; every other setting reads back what was accepted.
SERVER_READBACKS = {"cam1:Acquire", "cam1:ArrayCounter"}
STATUS_POLL_PERIOD = 0.1  # s


class DetectorIOC:
    def __init__(self, prefix: str):
        self.prefix = prefix
        records.set_prefix(prefix)
        self.settings: dict[str, Any] = {}
        self.readbacks: dict[str, Any] = {}
        for spec in detector.SETTINGS:
            self.settings[spec.name] = records.Setting(spec, self._accepted, self._refused)
            self.readbacks[spec.name] = records.input_record(spec, spec.readback_name)
        self.status = {spec.name: records.input_record(spec) for spec in detector.STATUS_PVS}
        self._acquisitions_done: int | None = None
        self._server_message = ""
        self._pva: Context | None = None
        self._quit = threading.Event()

    def _accepted(self, spec: PvSpec, value: Any) -> None:
        if spec.name not in SERVER_READBACKS:
            self.readbacks[spec.name].set(value)

    def _refused(self, spec: PvSpec, reason: str) -> None:
        self.status["cam1:StatusMessage_RBV"].set(reason)

    def follow_image_server(self) -> None:
        """Mirror the image server's status channel into the readbacks."""
        self._pva = Context("pva", nt=False)
        threading.Thread(target=self._poll_image_server, daemon=True).start()

    def _poll_image_server(self) -> None:
        # Polled, not monitored: a p4p monitor in this process was seen to stop
        # delivering updates after its first few.
        while not self._quit.wait(STATUS_POLL_PERIOD):
            name = self.prefix + detector.STATUS
            try:
                status = self._pva.get(name, timeout=1.0)
            except TimeoutError as error:
                status = error
                # pvAccess searches for a name not yet served ever less often: ask anew
                self._pva.disconnect(name)
            except Exception as error:  # closing, or a bad reply: say so, keep polling
                log.warning("image server status: %s", error)
                continue
            try:
                self._on_server_status(status)
            except Exception:
                log.exception("could not apply the image server's status")

    def _on_server_status(self, status: Any) -> None:
        if isinstance(status, TimeoutError):
            self.status["cam1:DetectorState_RBV"].set(
                detector.DETECTOR_STATES.index("Disconnected"))
            self.status["cam1:ArrayRate_RBV"].set(0.0)
            return
        state = status.state if status.state in detector.DETECTOR_STATES else "Error"
        self.status["cam1:DetectorState_RBV"].set(detector.DETECTOR_STATES.index(state))
        self.status["cam1:ArrayRate_RBV"].set(status.rate)
        self.status["cam1:NumImagesCounter_RBV"].set(status.imagesInAcquisition)
        self.status["cam1:ArraySizeX_RBV"].set(status.sizeX)
        self.status["cam1:ArraySizeY_RBV"].set(status.sizeY)
        # Only news: a refused put's message stays until the server says something new.
        if status.message and status.message != self._server_message:
            self._server_message = status.message
            self.status["cam1:StatusMessage_RBV"].set(status.message)
        self.readbacks["cam1:ArrayCounter"].set(status.arrayCounter)
        self.readbacks["cam1:Acquire"].set(int(status.acquiring))
        done = status.acquisitionsDone
        finished = self._acquisitions_done is not None and done > self._acquisitions_done
        self._acquisitions_done = done
        # An acquisition that ends by itself (Single, Multiple, an error) puts
        # Acquire back to Done, as areaDetector does.
        if finished and not status.acquiring and self.settings["cam1:Acquire"].get():
            self.settings["cam1:Acquire"].set(0)

    def close(self) -> None:
        self._quit.set()
        if self._pva is not None:
            self._pva.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptychoedge-detector-ioc",
        description="Control records (cam1:) of the simulated detector, over CA and PVA.")
    parser.add_argument("--prefix", default="SIM1:", help="detector PV prefix (default SIM1:)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s detector-ioc %(message)s")

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    ioc = DetectorIOC(args.prefix)
    builder.LoadDatabase()
    softioc.iocInit(dispatcher)
    ioc.follow_image_server()
    log.info("serving %scam1: records", args.prefix)

    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    quit_event.wait()
    ioc.close()
    log.info("stopped")
    softioc.safeEpicsExit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
