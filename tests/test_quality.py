"""The diffraction residual: small for the true patch, larger for wrong ones."""

import numpy as np

from ptychoedge.inference.manifest import Manifest
from ptychoedge.inference.model import ModelShape
from ptychoedge.inference.preprocess import Preprocessing
from ptychoedge.inference.quality import DiffractionResidual
from ptychoedge.sim import physics


def test_the_true_patch_explains_its_frame_best():
    simulator = physics.PtychographySimulator(128, seed=0)
    manifest = Manifest.for_instrument("t", ModelShape(), Preprocessing(128, 64),
                                       simulator.instrument())
    frames, truth = simulator.frames(physics.fermat_spiral_positions(32, 0.25e-6))
    binned = manifest.preprocessing.binned(frames)
    targets = manifest.preprocessing.targets(truth)
    residual = DiffractionResidual(manifest)

    true = residual(binned, targets[:, 0], targets[:, 1])
    blank = residual(binned, np.ones_like(targets[:, 0]), np.zeros_like(targets[:, 1]))
    swapped = residual(binned, targets[::-1, 0], targets[::-1, 1])
    assert true.shape == (32,)
    assert np.all(true >= 0)
    assert np.median(true) < np.median(blank)
    assert np.median(true) < 0.9 * np.median(swapped)
    # Frames made with a probe the model does not know stand far out, even given the truth.
    other = physics.PtychographySimulator(128, seed=0, probe=physics.make_probe(128, 40, 0.5))
    other_frames, other_truth = other.frames(physics.fermat_spiral_positions(32, 0.25e-6))
    other_targets = manifest.preprocessing.targets(other_truth)
    unknown = residual(manifest.preprocessing.binned(other_frames), other_targets[:, 0],
                       other_targets[:, 1])
    assert np.median(unknown) > 5 * np.median(true)
    # Scale-free: the same frame at ten times the dose scores about the same.
    brighter = residual(binned * 10, targets[:, 0], targets[:, 1])
    np.testing.assert_allclose(brighter, true, rtol=1e-3)


def test_variation_tells_a_weak_sample_from_one_answer_for_every_frame():
    """A sample that scatters: frames vary far beyond their noise; one answer for every
    frame explains none of it, the true patches nearly all, answers of other frames less
    than none. A weak one: frames vary about as much as their noise."""
    from ptychoedge.inference.quality import variation
    from ptychoedge.sim.samples import named_sample

    positions = physics.fermat_spiral_positions(40, 0.25e-6)
    strong = physics.PtychographySimulator(64, seed=0, sample=named_sample("labyrinth",
                                                                           (256, 256), 0))
    probe = strong.instrument().probe
    frames, truth = strong.frames(positions)
    over_noise, none = variation(probe, frames, np.ones(truth.shape), np.zeros(truth.shape))
    _, nearly_all = variation(probe, frames, np.abs(truth), np.angle(truth))
    assert over_noise > 10 and none < 1e-6
    assert nearly_all > 0.8
    _, misplaced = variation(probe, frames, np.abs(truth[::-1]), np.angle(truth[::-1]))
    assert misplaced < 0
    weak = physics.PtychographySimulator(64, seed=0, sample=named_sample(
        "labyrinth", (256, 256), 0, thickness=0.01))
    weak_frames, _ = weak.frames(positions)
    assert variation(probe, weak_frames, np.abs(truth), np.angle(truth))[0] < 3


def test_each_shipped_model_tells_apart_the_frames_of_the_samples_it_learnt():
    """Particles: the folded network learnt them, the default one did not; both their
    images tell the default kind's frames apart. The fit guard reads this share live."""
    from functools import reduce
    from operator import add

    from ptychoedge.inference.backends import open_model
    from ptychoedge.inference.batcher import Reconstructor
    from ptychoedge.pvdb.processors import EXPLAINS
    from ptychoedge.sim.samples import named_sample

    positions = physics.fermat_spiral_positions(96, 0.25e-6)

    def explained(model: str, kind: str) -> float:
        backend, manifest = open_model("onnxruntime", "fp32", model, threads=1)
        simulator = physics.simulator_for(manifest.instrument, seed=301, sample=named_sample(
            kind, (512, 512), 301))
        frames = simulator.frames(positions)[0]
        reconstructor = Reconstructor(backend, manifest)
        spreads = [reconstructor(list(frames[i:i + 32])).spread for i in range(0, 96, 32)]
        return reduce(add, spreads).figures()[1]

    assert explained("ptychonn-folded", "particles") > 4 * EXPLAINS
    assert explained("ptychonn-default", "particles") < EXPLAINS
    for model in ("ptychonn-default", "ptychonn-folded"):
        assert explained(model, "default") > 4 * EXPLAINS


def test_each_shipped_model_carries_residual_limits_its_own_frames_stay_under():
    """The IOC's alarm limits come from the manifest: frames of a sample the model never saw
    but of its own kind and instrument stay under MINOR, another probe's pass MAJOR."""
    from ptychoedge.inference.backends import open_model
    from ptychoedge.inference.batcher import Reconstructor

    positions = physics.fermat_spiral_positions(64, 0.25e-6)
    for model in ("ptychonn-default", "ptychonn-folded"):
        backend, manifest = open_model("onnxruntime", "fp32", model, threads=1)
        minor, major = manifest.residual_limits()
        reconstructor = Reconstructor(backend, manifest)
        own = physics.simulator_for(manifest.instrument, seed=301)
        residuals = reconstructor(list(own.frames(positions)[0])).residuals
        assert np.median(residuals) < minor / 2, model
        other = physics.PtychographySimulator(128, seed=301,
                                              probe=physics.make_probe(128, 40, 0.5))
        residuals = reconstructor(list(other.frames(positions)[0])).residuals
        assert np.median(residuals) > major, model
