"""The pipeline's images, `$(P)Recon:*`, `$(P)Mosaic:*` and `$(P)Refined:*`, for as long as
its IOC runs.

The mosaic collector runs only while the pipeline does, and serves its images
under `$(P)collector:`; the refiner only after a Refine, under `$(P)refiner:`. An
areaDetector plugin's arrays exist as long as its IOC does, so the pipeline IOC starts
this relay with itself: it serves the six images at once (empty NTNDArrays, uniqueId 0,
until the first), passes on every image the collector or the refiner publishes, and
keeps the last one while neither runs. pvapy, so a process of its own: it must not
share one with softioc.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import pvaccess as pva

from ptychoedge.pvdb import pipeline

log = logging.getLogger("ptychoedge.image_relay")


def relayed(prefix: str) -> list[tuple[str, str]]:
    """(image, the channel it is passed on from) for every image of the pipeline."""
    collector = pipeline.collector_channels(prefix)["images"]
    refiner = pipeline.refiner_images(prefix)
    return ([(image, collector + image) for image in pipeline.IMAGES]
            + [(image, refiner + image) for image in pipeline.REFINED_IMAGES])


class ImageRelay:
    def __init__(self, prefix: str):
        self.server = pva.PvaServer()
        self._channels = []
        for image, source in relayed(prefix):
            self.server.addRecord(prefix + image, pva.NtNdArray())
            channel = pva.Channel(source, pva.PVA)
            channel.monitor(lambda pv, name=prefix + image: self._pass_on(name, pv), "field()")
            self._channels.append(channel)

    def _pass_on(self, name: str, image) -> None:
        if image["uniqueId"] > 0:  # not a new source's empty image: the last one stays
            self.server.update(name, image)

    def close(self) -> None:
        for channel in self._channels:
            channel.stopMonitor()
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptychoedge-image-relay",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="EDGE1:", help="pipeline PV prefix (default EDGE1:)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s image-relay %(message)s")
    quit_event = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: quit_event.set())
    signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    relay = ImageRelay(args.prefix)
    log.info("serving %s", ", ".join(args.prefix + image for image, _ in relayed(args.prefix)))
    quit_event.wait()
    relay.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
