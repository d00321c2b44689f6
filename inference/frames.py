"""Mono NTNDArray frames to images: raw pixels, or compressed as areaDetector does.

Codecs (the NTNDArray's `codec.name`; `codec.parameters` holds the pvAccess
scalar type of the original pixels, `uncompressedSize` their bytes):

- `lz4`: a raw LZ4 block, as NDPluginCodec writes it (`LZ4_compress_default`);
- `blosc`: a Blosc frame (any inner compressor: blosclz, lz4, lz4hc, zlib, zstd;
  any shuffle), self-describing;
- `bslz4`: bitshuffle-LZ4 blocks as `bshuf_compress_lz4` writes them (NDPluginCodec,
  the Eiger's stream), default block size.

HDF5-filter framing, as `pvapy-ad-sim-server -hcm` sends the chunks of a
compressed file (`read_direct_chunk`), is recognised and skipped: the lz4 filter
(32004) puts an 8-byte big-endian size and a 4-byte block size in front of
blocks that each carry their 4-byte compressed size; the bitshuffle filter
(32008) an 8-byte size and a 4-byte block size (bytes) in front of the
bitshuffle stream; blosc chunks (32001) are plain Blosc frames. Neither header
can begin a valid raw stream (both start with zero bytes where a raw LZ4 block
or bitshuffle block length cannot), so no setting is needed; pvapy's
`PVAPY_COMPRESSED_PAYLOAD_START`, where set, is ignored here.

Floating-point pixels (an NDProcess stream: dark subtracted, gaps as NaN), raw or
compressed, are read as counts (`counts.as_counts`); those in other units are refused.

A codec whose package is missing, or a name that is no codec, raises
`CodecUnavailable` (a `FrameError` of kind `decode`) naming the codec and what
to install; the processor logs it once, not for every frame.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import struct
import threading
from typing import Any

import numpy as np

from ptychoedge.inference.counts import NotCounts, as_counts
from ptychoedge.inference.preprocess import FrameError

PIXEL_FIELDS = {"byteValue", "ubyteValue", "shortValue", "ushortValue", "intValue", "uintValue",
                "longValue", "ulongValue", "floatValue", "doubleValue"}
# The largest frame taken (8192 x 8192): a header claiming more, or compressed data that
# would inflate to more, is refused before anything is allocated for it.
MAX_PIXELS = 8192 * 8192
MAX_PIXEL_BYTES = 8

# pvAccess ScalarType numbers (pvData: pvBoolean 0, pvByte 1, ... pvString 11), as
# codec.parameters carries them (pvapy's pva.BYTE, pva.UBYTE, ... have the same values)
SCALAR_TYPES = {1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.uint8, 6: np.uint16,
                7: np.uint32, 8: np.uint64, 9: np.float32, 10: np.float64}
SCALAR_TYPE_OF = {np.dtype(dtype): number for number, dtype in SCALAR_TYPES.items()}

# codec name -> (module imported to decode it, what to install)
CODECS = {
    "lz4": ("lz4.block", "lz4"),
    "blosc": ("blosc", "blosc"),
    "bslz4": ("bitshuffle", "bitshuffle"),
}
INSTALL_HINT = "pip install ptychoedge (or: pip install {package})"


class CodecUnavailable(FrameError):
    """Frames of a codec this install cannot decode (unknown name, missing package)."""

    def __init__(self, codec: str, message: str):
        super().__init__("decode", message)
        self.codec = codec


_modules: dict[str, Any] = {}


def codec_module(codec: str) -> Any:
    """The module that decodes `codec`, imported once; CodecUnavailable if there is none."""
    module = _modules.get(codec)
    if module is not None:
        return module
    if codec not in CODECS:
        raise CodecUnavailable(codec, f"frames compressed with '{codec}' cannot be decoded: "
                               f"unknown codec (known: {', '.join(sorted(CODECS))})")
    name, package = CODECS[codec]
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise CodecUnavailable(
            codec, f"frames compressed with '{codec}' cannot be decoded: the Python package "
            f"'{package}' is missing ({error}); install it: "
            + INSTALL_HINT.format(package=package)) from error
    _modules[codec] = module
    return module


def _be(payload: memoryview, start: int, size: int) -> int:
    return int.from_bytes(payload[start:start + size], "big")


def _lz4(payload: memoryview, dtype: np.dtype, nbytes: int) -> np.ndarray:
    block = codec_module("lz4")
    if len(payload) >= 16 and _be(payload, 0, 8) == nbytes:
        # HDF5 lz4 filter: total size, block size, then (compressed size, block) pairs
        block_size = _be(payload, 8, 4) or nbytes
        out, at = bytearray(), 12
        while len(out) < nbytes:
            want = min(block_size, nbytes - len(out))
            size = _be(payload, at, 4)
            at += 4
            chunk = payload[at:at + size]
            at += size
            # the filter stores a block uncompressed where LZ4 would not shrink it
            out += chunk if size == want else block.decompress(chunk, uncompressed_size=want)
        data = bytes(out)
    else:
        data = block.decompress(payload, uncompressed_size=nbytes)
    if len(data) != nbytes:
        raise FrameError("decode", f"lz4 data gave {len(data)} bytes, {nbytes} expected")
    return np.frombuffer(data, dtype)


def _blosc(payload: memoryview, dtype: np.dtype, nbytes: int) -> np.ndarray:
    blosc = codec_module("blosc")
    if len(payload) < 16:
        raise FrameError("decode", f"blosc frame of {len(payload)} bytes has no header")
    claimed, cbytes = (struct.unpack_from("<I", payload, at)[0] for at in (4, 12))
    # Checked before decoding: blosc writes as many bytes as its header says.
    if claimed != nbytes:
        raise FrameError("decode", f"blosc header says {claimed} bytes, "
                         f"uncompressedSize {nbytes}")
    if cbytes != len(payload):
        raise FrameError("decode", f"blosc header says {cbytes} compressed bytes, "
                         f"got {len(payload)}")
    out = np.empty(nbytes // dtype.itemsize, dtype)
    written = blosc.decompress_ptr(bytes(payload), out.ctypes.data)
    if written != nbytes:
        raise FrameError("decode", f"blosc data gave {written} bytes, {nbytes} expected")
    return out


BSHUF_TARGET_BLOCK_BYTES = 8192  # bitshuffle's default block: 8 KiB of elements
BSHUF_BLOCKED_MULT = 8  # blocks are a multiple of 8 elements; the last < 8 are raw


def _bslz4(payload: memoryview, dtype: np.dtype, nbytes: int) -> np.ndarray:
    """Bitshuffle-LZ4, read block by block with LZ4's safe decoder.

    `bitshuffle.decompress_lz4` trusts its input (it crashes the process on a corrupt
    block), so only its bit transposition is used: each block is a 4-byte big-endian
    length and an LZ4 block of `block` bitshuffled elements; a last shorter block holds
    the rest rounded down to 8 elements, and the last (size % 8) elements follow raw.
    """
    bitshuffle = codec_module("bslz4")
    block = codec_module("lz4")
    size, item = nbytes // dtype.itemsize, dtype.itemsize
    block_size, at = 0, 0
    if len(payload) >= 12 and _be(payload, 0, 4) == 0 and _be(payload, 0, 8) == nbytes:
        # HDF5 bitshuffle filter: total size, block size in bytes, then the stream
        block_size, at = _be(payload, 8, 4) // item, 12
    if not block_size:
        block_size = max(128, BSHUF_TARGET_BLOCK_BYTES // item // BSHUF_BLOCKED_MULT
                         * BSHUF_BLOCKED_MULT)
    if block_size % BSHUF_BLOCKED_MULT:
        raise FrameError("decode", f"bslz4 block of {block_size} elements is no multiple of 8")
    last = size % block_size
    blocks = [block_size] * (size // block_size) + (
        [last - last % BSHUF_BLOCKED_MULT] if last >= BSHUF_BLOCKED_MULT else [])
    out = bytearray()
    for elements in blocks:
        if at + 4 > len(payload):
            raise FrameError("decode", "bslz4 data ends before its last block")
        length = _be(payload, at, 4)
        at += 4
        out += block.decompress(payload[at:at + length], uncompressed_size=elements * item)
        at += length
    out += payload[at:]  # the raw tail
    if len(out) != nbytes:
        raise FrameError("decode", f"bslz4 data gave {len(out)} bytes, {nbytes} expected")
    _one_omp_thread(bitshuffle)
    return bitshuffle.bitunshuffle(np.frombuffer(bytes(out), dtype), block_size)


_omp = threading.local()
_gomp: list = []  # the libgomp copies bitshuffle may call


def _one_omp_thread(bitshuffle: Any) -> None:
    """bitshuffle's bit transposition in this thread without OpenMP workers.

    The wheel's OpenMP (its own libgomp) starts a team per call: on a few shared cores
    its threads spin and a 128x128 frame takes ~8 ms instead of ~15 us. The thread
    count is set for the calling thread only (OpenMP's per-thread setting), so the
    model's own threads, in other threads, are untouched.
    """
    if getattr(_omp, "set", False):
        return
    _omp.set = True
    if not _gomp:
        # bitshuffle's OpenMP calls bind to the first libgomp in the global scope (torch's,
        # where torch came first) or else to the wheel's own copy: set both
        libs = os.path.join(os.path.dirname(os.path.dirname(bitshuffle.__file__)),
                            "bitshuffle.libs", "libgomp*.so*")
        for name in [None, *sorted(glob.glob(libs))]:
            try:
                lib = ctypes.CDLL(name) if name is None else ctypes.CDLL(
                    name, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
                lib.omp_set_num_threads  # noqa: B018 - present, or AttributeError
            except (OSError, AttributeError):
                continue
            _gomp.append(lib)
    for lib in _gomp:
        lib.omp_set_num_threads(1)


DECODERS = {"lz4": _lz4, "blosc": _blosc, "bslz4": _bslz4}


def decompress(payload: Any, codec: str, scalar_type: int, nbytes: int) -> np.ndarray:
    """The flat pixels of a compressed frame; FrameError (CodecUnavailable) if not."""
    codec_module(codec)
    dtype = SCALAR_TYPES.get(scalar_type)
    if dtype is None:
        raise FrameError("decode", f"{codec} frame: pixel type {scalar_type} is not a "
                         f"pvAccess numeric type")
    dtype = np.dtype(dtype)
    if nbytes % dtype.itemsize:
        raise FrameError("decode", f"{codec} frame: {nbytes} bytes is no whole number of "
                         f"{dtype} pixels")
    view = memoryview(np.ascontiguousarray(payload).view(np.uint8)).cast("B")
    try:
        return DECODERS[codec](view, dtype, nbytes)
    except FrameError:
        raise
    except Exception as error:
        raise FrameError("decode", f"cannot decompress {codec} data: {error}") from error


def decode_frame(pv_object: Any) -> np.ndarray:
    """The (ny, nx) image of a mono NTNDArray, decompressed; FrameError if it has none."""
    dims = pv_object["dimension"]
    if len(dims) == 0:
        raise FrameError("empty", "frame without dimensions")
    if len(dims) != 2:
        raise FrameError("rank", f"expected a mono 2-D frame, got {len(dims)} dimensions")
    nx, ny = dims[0]["size"], dims[1]["size"]
    if nx * ny > MAX_PIXELS:
        raise FrameError("too_large", f"frame {nx}x{ny} is larger than {MAX_PIXELS} pixels")
    key = pv_object.getSelectedUnionFieldName()
    if not key:
        raise FrameError("empty", "frame without pixels")
    data = pv_object["value"][0][key]
    codec = pv_object["codec"]["name"]
    if codec:
        size = pv_object["uncompressedSize"]
        if not 0 < size <= nx * ny * MAX_PIXEL_BYTES:
            raise FrameError("too_large", f"{codec} data claims {size} bytes uncompressed for "
                             f"a {nx}x{ny} frame")
        try:
            scalar_type = pv_object["codec.parameters"][0]["value"]
        except (KeyError, IndexError, TypeError) as error:
            raise FrameError("decode", f"{codec} frame without its pixel type in "
                             f"codec.parameters") from error
        data = decompress(data, codec, int(scalar_type), size)
    elif key not in PIXEL_FIELDS:
        raise FrameError("pixel_type", f"expected numeric pixels, got {key}")
    data = np.asarray(data)
    if data.size == 0 or nx * ny == 0:
        raise FrameError("empty", f"empty frame {nx}x{ny}")
    if data.size != nx * ny:
        raise FrameError("decode", f"{data.size} pixels for a {nx}x{ny} frame")
    try:
        return as_counts(data.reshape(ny, nx))
    except NotCounts as error:
        raise FrameError("pixel_type", str(error)) from error


# -- compression, as NDPluginCodec does it (the simulator and the benchmark) ------------

def compress(image: np.ndarray, codec: str, blosc_compressor: str = "blosclz",
             blosc_level: int = 5, blosc_shuffle: str = "Byte") -> np.ndarray:
    """The uint8 payload NDPluginCodec would publish for `image` with `codec`
    (blosc: compressor blosclz, lz4, lz4hc, zlib or zstd; shuffle None, Byte or Bit)."""
    raw = np.ascontiguousarray(image)
    if codec == "lz4":
        return np.frombuffer(codec_module("lz4").compress(raw.tobytes(), store_size=False),
                             np.uint8)
    if codec == "blosc":
        blosc = codec_module("blosc")
        shuffle = {"None": blosc.NOSHUFFLE, "Byte": blosc.SHUFFLE,
                   "Bit": blosc.BITSHUFFLE}[blosc_shuffle]
        return np.frombuffer(blosc.compress(raw.tobytes(), typesize=raw.itemsize,
                                            clevel=blosc_level, shuffle=shuffle,
                                            cname=blosc_compressor), np.uint8)
    if codec == "bslz4":
        bitshuffle = codec_module("bslz4")
        _one_omp_thread(bitshuffle)
        return np.asarray(bitshuffle.compress_lz4(raw.ravel(), 0)).view(np.uint8)
    raise ValueError(f"no codec {codec!r}: one of {', '.join(CODECS)}")
