"""A pvapy processor for tests: writes what it receives, one JSON line per frame.

Run by a real `pvapy-hpc-consumer` (`--processor-file` this file,
`--processor-class FrameRecorder`, `--processor-args '{"path": ...}'`).
"""

import json

from pvapy.hpc.adImageProcessor import AdImageProcessor


class FrameRecorder(AdImageProcessor):
    def __init__(self, configDict=None):  # noqa: N803 - pvapy's signature
        super().__init__(configDict or {})
        self.output = open((configDict or {})["path"], "a")  # noqa: SIM115 - closed in stop()

    def process(self, pvObject):  # noqa: N803
        unique_id, image, nx, ny, _, _, _ = self.reshapeNtNdArray(pvObject)
        attributes = {a["name"]: a["value"][0]["value"] for a in pvObject["attribute"]}
        record = {"uniqueId": unique_id, "nx": nx, "ny": ny, "dtype": str(image.dtype),
                  "shape": list(image.shape), "PosX": attributes.get("PosX"),
                  "PosY": attributes.get("PosY"),
                  "timeStamp": pvObject["timeStamp"]["secondsPastEpoch"]}
        self.output.write(json.dumps(record) + "\n")
        self.output.flush()
        return pvObject

    def stop(self):
        self.output.close()
