"""NTNDArray frames as areaDetector's NDPluginPva publishes them (pvapy side).

`dimension[0]` is x (the fast axis), `uniqueId` counts frames, both time stamps
are set, and attributes carry the colour mode and the scan position.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pvaccess as pva

from ptychoedge.inference.frames import SCALAR_TYPE_OF, compress

# NTNDArray union member for each pixel type
VALUE_FIELDS = {
    np.dtype(np.int8): "byteValue",
    np.dtype(np.uint8): "ubyteValue",
    np.dtype(np.int16): "shortValue",
    np.dtype(np.uint16): "ushortValue",
    np.dtype(np.int32): "intValue",
    np.dtype(np.uint32): "uintValue",
    np.dtype(np.int64): "longValue",
    np.dtype(np.uint64): "ulongValue",
    np.dtype(np.float32): "floatValue",
    np.dtype(np.float64): "doubleValue",
}
COLOR_MODE_MONO = 0


def position_attributes(x: float, y: float) -> list:
    """NTAttributes PosX and PosY, in metres."""
    attributes = []
    for name, value, axis in (("PosX", x, "x"), ("PosY", y, "y")):
        attribute = pva.NtAttribute(name, pva.PvDouble(float(value)))
        attribute["descriptor"] = f"Sample {axis} position at this frame (m)"
        attributes.append(attribute)
    return attributes


def make_frame(image: np.ndarray, unique_id: int = 0, position: tuple[float, float] | None = None,
               extra_attributes: list | None = None) -> pva.NtNdArray:
    """A mono NTNDArray holding `image` (rows = y), stamped now."""
    if image.ndim != 2:
        raise ValueError(f"a mono frame is 2-D, got shape {image.shape}")
    field = VALUE_FIELDS.get(image.dtype)
    if field is None:
        raise ValueError(f"no NTNDArray pixel type for {image.dtype}")
    ny, nx = image.shape
    frame = pva.NtNdArray()
    frame["uniqueId"] = int(unique_id)
    frame["dimension"] = [pva.PvDimension(nx, 0, nx, 1, False),
                          pva.PvDimension(ny, 0, ny, 1, False)]
    frame["compressedSize"] = image.nbytes
    frame["uncompressedSize"] = image.nbytes
    frame["value"] = {field: np.ascontiguousarray(image).ravel()}
    attributes = [pva.NtAttribute("ColorMode", pva.PvInt(COLOR_MODE_MONO))]
    if position is not None:
        attributes += position_attributes(*position)
    frame["attribute"] = attributes + (extra_attributes or [])
    stamp(frame, unique_id)
    return frame


def make_compressed_frame(image: np.ndarray, codec: str, unique_id: int = 0,
                          position: tuple[float, float] | None = None,
                          extra_attributes: list | None = None, **blosc: Any) -> pva.NtNdArray:
    """`image` compressed as NDPluginCodec publishes it: the payload as `ubyteValue`,
    `codec.name`, the original pixel type (pvAccess ScalarType) in `codec.parameters`,
    `compressedSize` the payload's bytes and `uncompressedSize` the pixels' bytes.
    `blosc`: blosc_compressor, blosc_level, blosc_shuffle (see inference/frames.py)."""
    if codec in ("", "None", None):
        return make_frame(image, unique_id, position, extra_attributes)
    frame = make_frame(image[:1, :1], unique_id, position, extra_attributes)
    ny, nx = image.shape
    payload = compress(image, codec, **blosc)
    frame["dimension"] = [pva.PvDimension(nx, 0, nx, 1, False),
                          pva.PvDimension(ny, 0, ny, 1, False)]
    frame["value"] = {"ubyteValue": payload}
    frame["codec"] = {"name": codec,
                      "parameters": pva.PvInt(SCALAR_TYPE_OF[np.dtype(image.dtype)])}
    frame["compressedSize"] = payload.size
    frame["uncompressedSize"] = image.nbytes
    return frame


def stamp(frame: pva.NtNdArray, unique_id: int, when: float | None = None) -> None:
    """Give a (cached) frame its `uniqueId` and time stamps."""
    frame["uniqueId"] = int(unique_id)
    now = pva.PvTimeStamp(time.time() if when is None else when)
    frame["timeStamp"] = now
    frame["dataTimeStamp"] = now
