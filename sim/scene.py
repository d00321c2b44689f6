"""The simulated beamline's scene: its probe and sample by name, as a simulator.

`ptychoedge sim --probe KIND --sample KIND` and whoever needs the truth behind its frames
(a test, a benchmark) build the same simulator here, without the image server's pvapy.
"""

from __future__ import annotations

import numpy as np

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
