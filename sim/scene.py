"""The simulated beamline's scene: its probe and sample by name, as a simulator.

`ptychoedge sim --probe KIND --sample KIND` and whoever needs the truth behind its frames
(a test, a benchmark) build the same simulator here, without the image server's pvapy;
`--mask` marks the frames' masked pixels here too.
"""

from __future__ import annotations

import numpy as np

from ptychoedge.inference.instrument import read_mask
from ptychoedge.sim import physics, probes, samples


def simulator(size: int, probe: str = "default", probe_modes: int = 1,
              sample: str = "default", sample_thickness: float = 1.0, seed: int = 0,
              photons: float = 1e6, dtype: type | np.dtype = np.uint16
              ) -> physics.PtychographySimulator:
    """The simulator of `size`-pixel frames with the named probe and sample ("default":
    the simulator's own)."""
    probe_field = sample_field = None
    if probe != "default" or probe_modes != 1:
        probe_field = probes.named_probe(probe, size, physics.OBJECT_PIXEL_SIZE, probe_modes)
    if sample != "default" or sample_thickness != 1.0:
        side = max(1024, size + 768)  # the size the simulator gives its own: room for a scan
        sample_field = samples.named_sample(sample, (side, side), seed, sample_thickness)
    return physics.PtychographySimulator(size, photons=photons, dtype=dtype, seed=seed,
                                         probe=probe_field, sample=sample_field)


def detector_mask(mask_file: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The detector mask in `mask_file` (.npy, CXI or NeXus: `read_mask`; nonzero: masked;
    "": none) as booleans; ValueError where it is not of the frames' `shape` (ny, nx)."""
    if not mask_file:
        return None
    mask = np.asarray(read_mask(mask_file)) != 0
    if mask.shape != tuple(shape):
        raise ValueError(f"the detector mask {mask_file} is {mask.shape[1]}x{mask.shape[0]}, "
                         f"the frames {shape[1]}x{shape[0]}")
    return mask


def marked(frames: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`frames` with the `mask`'s pixels at the pixel type's maximum (a copy), as detectors
    mark a module gap's pixels; NaN in floating-point frames, as processing marks them."""
    if mask is None:
        return frames
    frames = frames.copy()
    floating = np.issubdtype(frames.dtype, np.floating)
    frames[..., mask] = np.nan if floating else np.iinfo(frames.dtype).max
    return frames
