"""`ptychoedge sim --probe --sample --photons --mask --data-type`: the live detector serves
that instrument, its masked pixels at the pixel type's maximum (NaN in float frames)."""

from __future__ import annotations

import queue

import numpy as np
from conftest import start_sim
from test_mask import gaps, marked

from ptychoedge.sim import physics, probes, samples

N = 128


def next_frames(ctx, channel: str, count: int) -> list:
    """The next `count` frames published on `channel` (p4p monitor)."""
    frames: queue.Queue = queue.Queue()
    subscription = ctx.monitor(channel, frames.put)
    received = []
    try:
        while len(received) < count:
            frame = frames.get(timeout=30.0)
            if frame["uniqueId"] > 0:  # the record's initial, empty value is not a frame
                received.append(frame)
    finally:
        subscription.close()
    return received


def test_sim_serves_the_chosen_probe_and_sample(spawn, prefix, pva, tmp_path):
    np.save(tmp_path / "mask.npy", gaps((N, N)))
    start_sim(spawn, prefix, tmp_path, "--no-stage", "--probe", "zoneplate-defocus",
              "--sample", "labyrinth", "--sample-thickness", "2", "--photons", "1e7",
              "--mask", str(tmp_path / "mask.npy"), "--rate", "100", "--acquire")
    frames = next_frames(pva, prefix + "Pva1:Image", 3)

    probe = probes.named_probe("zoneplate-defocus", N, physics.OBJECT_PIXEL_SIZE)
    sample = samples.named_sample("labyrinth", (1024, 1024), seed=0, thickness=2.0)
    chosen = physics.PtychographySimulator(N, photons=1e7, probe=probe, sample=sample)
    default = physics.PtychographySimulator(N, photons=1e7)
    for frame in frames:
        attributes = {a["name"]: a["value"] for a in frame["attribute"]}
        position = np.array([[attributes["PosX"], attributes["PosY"]]])
        received = frame["value"].reshape(N, N)
        # Noise is seeded by the position: the very frame the simulator computes here.
        np.testing.assert_array_equal(received, marked(chosen.frames(position)[0][0],
                                                       gaps((N, N))))
        assert np.abs(received.astype(float) - default.frames(position)[0][0]).sum() \
            > 0.5 * received.sum()


def test_sim_serves_float32_frames_as_processing_does(spawn, prefix, pva, tmp_path):
    """`--data-type Float32`: the counts as floats, the mask's pixels NaN (an NDProcess
    stream), which the pipeline reads as the same counts (tests/test_codecs.py)."""
    mask = gaps((N, N))
    np.save(tmp_path / "mask.npy", mask)
    start_sim(spawn, prefix, tmp_path, "--no-stage", "--data-type", "Float32",
              "--mask", str(tmp_path / "mask.npy"), "--rate", "100", "--acquire")
    frames = next_frames(pva, prefix + "Pva1:Image", 3)
    simulator = physics.PtychographySimulator(N, dtype=np.uint32)
    for frame in frames:
        attributes = {a["name"]: a["value"] for a in frame["attribute"]}
        received = frame["value"].reshape(N, N)
        assert received.dtype == np.float32
        assert np.isnan(received[mask]).all() and np.isfinite(received[~mask]).all()
        counts = simulator.frames(np.array([[attributes["PosX"], attributes["PosY"]]]))[0][0]
        np.testing.assert_array_equal(received[~mask], counts[~mask])
