"""Where the detector's frames and their positions come from.

Each source hands out ready NTNDArray frames (the image server only stamps
them), so publishing costs the same whatever the physics costs:
- `PatternSource`: the detector's own scan, a precomputed bank looped forever;
- `StageSource`: a frame at the stage motors' current readbacks, for Bluesky scans;
- `ReplaySource`: a recorded scan from a CXI or NumPy file, looped.

`set_codec` makes a source hand out its frames compressed as NDPluginCodec does
(`cam1:Codec`, applied when an acquisition starts); a bank is compressed once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pvaccess as pva

from ptychoedge.inference.scan_file import load_scan
from ptychoedge.sim import physics, scene
from ptychoedge.sim.ntndarray import make_compressed_frame, make_frame

log = logging.getLogger(__name__)

# Float32: the counts as areaDetector's NDProcess publishes them once it has processed them
PIXEL_TYPES = {"UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32,
               "Float32": np.float32}
MICROMETRE = 1e-6
MAX_BANK_BYTES = 2 * 2**30  # precomputed frames are held in memory
BANK_CHUNK = 64  # frames computed at a time, to bound memory for large frames


@dataclass(frozen=True)
class CodecSettings:
    """How frames are compressed (NDPluginCodec's Compressor and Blosc settings)."""

    name: str = "None"  # None, lz4, blosc, bslz4
    blosc_compressor: str = "blosclz"
    blosc_level: int = 5
    blosc_shuffle: str = "Byte"  # None, Byte, Bit

    def apply(self, image: np.ndarray, position: tuple[float, float] | None
              ) -> pva.NtNdArray:
        return make_compressed_frame(image, self.name, 0, position,
                                     blosc_compressor=self.blosc_compressor,
                                     blosc_level=self.blosc_level,
                                     blosc_shuffle=self.blosc_shuffle)


RAW = CodecSettings()


def frame_pixels(frame: pva.NtNdArray) -> np.ndarray:
    """The (ny, nx) pixels of an uncompressed mono frame."""
    nx, ny = (d["size"] for d in frame["dimension"])
    return np.asarray(frame["value"][0][frame.getSelectedUnionFieldName()]).reshape(ny, nx)


@dataclass(frozen=True)
class SourceSettings:
    """What a source is built from; equal settings give an identical source."""

    source: str = "Pattern"
    size_x: int = 128
    size_y: int = 128
    data_type: str = "UInt16"
    pattern: str = "Fermat"
    step_um: float = 0.25
    points: int = 400
    photons: float = 1e6
    seed: int = 0
    replay_file: str = ""
    # Fixed when the image server starts (`ptychoedge sim --probe/--sample`), not PVs.
    probe: str = "default"  # a probes.PROBE_KINDS name or a probe file
    probe_modes: int = 1
    sample: str = "default"  # a samples.SAMPLE_KINDS name
    sample_thickness: float = 1.0  # times the family's usual thickness
    mask: str = ""  # a .npy detector mask: its nonzero pixels read the pixel type's maximum

    @property
    def dtype(self) -> type:
        return PIXEL_TYPES[self.data_type]

    def simulator(self) -> physics.PtychographySimulator:
        """The simulator of the counts: 32-bit for float pixels, whose counts never saturate."""
        counts = np.uint32 if np.issubdtype(self.dtype, np.floating) else self.dtype
        return scene.simulator(max(self.size_x, self.size_y), self.probe, self.probe_modes,
                               self.sample, self.sample_thickness, self.seed, self.photons,
                               counts)

    def scan_positions(self) -> np.ndarray:
        step = self.step_um * MICROMETRE
        if self.pattern == "Raster":
            side = int(np.ceil(np.sqrt(self.points)))
            return physics.raster_positions(side, side, step)[: self.points]
        return physics.fermat_spiral_positions(self.points, step)


def crop_to(frames: np.ndarray, size_y: int, size_x: int) -> np.ndarray:
    """The centre (size_y, size_x) of square frames, where the direct beam is."""
    n = frames.shape[-1]
    top, left = (n - size_y) // 2, (n - size_x) // 2
    return frames[..., top:top + size_y, left:left + size_x]


class BankSource:
    """A fixed list of frames with their positions, served in a loop."""

    def __init__(self, images: np.ndarray, positions: np.ndarray):
        self.raw = [make_frame(image, 0, (x, y))
                    for image, (x, y) in zip(images, positions, strict=True)]
        self.positions = [(float(x), float(y)) for x, y in positions]
        self.frames = self.raw
        self.codec = RAW
        self.size_y, self.size_x = images.shape[1:]
        self._next = 0

    def set_codec(self, codec: CodecSettings) -> None:
        """Hand out the frames compressed with `codec` (the bank is compressed once)."""
        if codec == self.codec:
            return
        self.frames = self.raw if codec == RAW else [
            codec.apply(frame_pixels(frame), position)
            for frame, position in zip(self.raw, self.positions, strict=True)]
        self.codec = codec

    def next_frame(self) -> pva.NtNdArray:
        frame = self.frames[self._next]
        self._next = (self._next + 1) % len(self.frames)
        return frame

    def rewind(self) -> None:
        self._next = 0


class PatternSource(BankSource):
    def __init__(self, settings: SourceSettings):
        positions = settings.scan_positions()
        bank_bytes = len(positions) * settings.size_x * settings.size_y * settings.dtype().itemsize
        if bank_bytes > MAX_BANK_BYTES:
            raise ValueError(f"a scan of {len(positions)} frames of {settings.size_x}x"
                             f"{settings.size_y} needs {bank_bytes / 2**30:.1f} GiB; the limit is "
                             f"{MAX_BANK_BYTES / 2**30:.0f} GiB: use fewer ScanPoints or a "
                             "smaller frame")
        simulator = settings.simulator()
        images = np.concatenate([
            crop_to(simulator.frames(positions[i:i + BANK_CHUNK])[0],
                    settings.size_y, settings.size_x).astype(settings.dtype, copy=False)
            for i in range(0, len(positions), BANK_CHUNK)
        ])
        mask = scene.detector_mask(settings.mask, images.shape[1:])
        super().__init__(scene.marked(images, mask), positions)


class ReplaySource(BankSource):
    def __init__(self, settings: SourceSettings):
        images, positions = load_scan(settings.replay_file)
        super().__init__(images, positions)


class StageSource:
    """Frames computed at the stage's current position, cached per object pixel."""

    CACHE_SIZE = 1024

    def __init__(self, settings: SourceSettings, read_position: Callable[[], tuple[float, float]]):
        self.settings = settings
        self.simulator = settings.simulator()
        self.read_position = read_position
        self.size_y, self.size_x = settings.size_y, settings.size_x
        self.mask = scene.detector_mask(settings.mask, (self.size_y, self.size_x))
        self._cache: OrderedDict[tuple[int, int], pva.NtNdArray] = OrderedDict()
        self.codec = RAW

    def set_codec(self, codec: CodecSettings) -> None:
        if codec != self.codec:
            self.codec = codec
            self._cache.clear()

    def next_frame(self) -> pva.NtNdArray:
        x, y = self.read_position()
        position = np.array([[x, y]])
        key = tuple(self.simulator.positions_to_pixels(position)[0])
        frame = self._cache.get(key)
        if frame is None:
            images, _ = self.simulator.frames(position)
            image = crop_to(images, self.size_y, self.size_x)[0]
            image = scene.marked(image.astype(self.settings.dtype, copy=False), self.mask)
            frame = self.codec.apply(image, (x, y))
            self._cache[key] = frame
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return frame

    def rewind(self) -> None:
        pass
