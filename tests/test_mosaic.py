"""Stitching: patches land at their positions and blend by the probe's weight; neighbouring
patches of one sample agree where they overlap, patches at the wrong places do not."""

import numpy as np
import pytest

from ptychoedge.inference.mosaic import TURN_ABOVE, Mosaic, agreement
from ptychoedge.pvdb.processors import AGREES
from ptychoedge.sim import physics

PIXEL = 10e-9


def test_patches_of_one_sample_rebuild_it():
    sample = physics.make_sample((256, 256), seed=3)
    size = 32
    weight = np.abs(physics.make_probe(size, 24)) ** 2
    mosaic = Mosaic(PIXEL, weight)
    positions = physics.raster_positions(8, 8, 12 * PIXEL)
    centre = np.array([128, 128])
    for x, y in positions:
        column, row = np.rint(np.array([x, y]) / PIXEL).astype(int) + centre - size // 2
        patch = sample[row:row + size, column:column + size]
        mosaic.add(np.abs(patch), np.angle(patch), x, y)
    amplitude, phase = mosaic.images()
    covered = mosaic.coverage()
    assert covered.sum() > 60 * 60
    # Every well-covered canvas pixel equals the sample pixel it came from.
    rows, columns = np.nonzero(covered)
    origin_column, origin_row = mosaic.position_to_pixel(0.0, 0.0)
    sample_rows, sample_columns = rows - origin_row + 128, columns - origin_column + 128
    np.testing.assert_allclose(amplitude[rows, columns],
                               np.abs(sample[sample_rows, sample_columns]), atol=1e-5)
    np.testing.assert_allclose(phase[rows, columns],
                               np.angle(sample[sample_rows, sample_columns]), atol=1e-5)


def test_patches_known_up_to_a_constant_phase_are_aligned_with_the_patches_before_them():
    # A network trained through the physics alone gives each patch's phase up to a
    # constant; stitched as they come, such patches blur the sample, aligned they rebuild it.
    sample = physics.make_sample((256, 256), seed=3) ** 3  # a phase of up to 1.5 pi
    size = 32
    weight = np.abs(physics.make_probe(size, 24)) ** 2
    constants = np.random.default_rng(1).uniform(-np.pi, np.pi, 64)
    positions = physics.raster_positions(8, 8, 12 * PIXEL)
    errors = {}
    for align in (False, True):
        mosaic = Mosaic(PIXEL, weight, align_phase=align)
        for (x, y), constant in zip(positions, constants, strict=True):
            column, row = np.rint(np.array([x, y]) / PIXEL).astype(int) + 128 - size // 2
            patch = sample[row:row + size, column:column + size]
            mosaic.add(np.abs(patch), np.angle(patch) + constant, x, y)
        _, phase = mosaic.images()
        rows, columns = np.nonzero(mosaic.coverage())
        origin_column, origin_row = mosaic.position_to_pixel(0.0, 0.0)
        truth = sample[rows - origin_row + 128, columns - origin_column + 128]
        turned = np.exp(1j * phase[rows, columns]) * np.conj(truth) / np.abs(truth)
        # the phase error after the one constant that fits the whole image best
        errors[align] = np.abs(np.angle(turned * np.conj(turned.mean()))).max()
    assert errors[True] < TURN_ABOVE  # constants that small are left: the network's error
    assert errors[False] > 1.0


def test_overlap_is_weighted_by_the_probe():
    weight = np.ones((4, 4))
    weight[:, 2:] = 3.0  # the right half of each patch counts three times
    mosaic = Mosaic(PIXEL, weight)
    mosaic.add(np.zeros((4, 4)), np.zeros((4, 4)), 0.0, 0.0)
    mosaic.add(np.ones((4, 4)), np.ones((4, 4)), 2 * PIXEL, 0.0)
    amplitude, _ = mosaic.images()
    column, row = mosaic.position_to_pixel(0.0, 0.0)
    # The overlap: the first patch's right half (weight 3, value 0) meets the
    # second patch's left half (weight 1, value 1).
    assert amplitude[row, column] == pytest.approx(0.25)
    assert amplitude[row, column - 2] == 0.0  # only the first patch
    assert amplitude[row, column + 2] == 1.0  # only the second


def test_canvas_grows_in_every_direction_and_resets():
    mosaic = Mosaic(PIXEL, np.ones((8, 8)))
    for x, y in ((0, 0), (-5e-6, 0), (5e-6, 0), (0, -5e-6), (0, 5e-6)):
        mosaic.add(np.full((8, 8), 0.5), np.zeros((8, 8)), x, y)
    amplitude, _ = mosaic.images()
    for x, y in ((-5e-6, 0), (5e-6, 0), (0, -5e-6), (0, 5e-6)):
        column, row = mosaic.position_to_pixel(x, y)
        assert amplitude[row, column] == 0.5
    assert mosaic.patches == 5
    mosaic.reset()
    assert mosaic.patches == 0 and mosaic.images()[0].size == 0


def test_ssim_and_psnr():
    from ptychoedge.inference.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    image = rng.random((64, 64))
    assert ssim(image, image, 1.0) == pytest.approx(1.0)
    assert ssim(image, rng.random((64, 64)), 1.0) < 0.1
    assert ssim(image, 0.9 * image, 1.0) < ssim(image, 0.99 * image, 1.0) < 1.0
    noisy = image + 0.1
    assert psnr(image, noisy, 1.0) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert psnr(image, image, 1.0) == float("inf")


def sample_patches(size: int = 32, noise: float = 0.0):
    """Patches of one sample along a Fermat spiral (step 8 px), each pixel's phase with noise
    of its own (`noise` rad)."""
    sample = physics.make_sample((256, 256), seed=3)
    rng = np.random.default_rng(0)
    positions = physics.fermat_spiral_positions(64, 8 * PIXEL)
    patches = []
    for x, y in positions:
        column, row = np.rint(np.array([x, y]) / PIXEL).astype(int) + 128 - size // 2
        patch = sample[row:row + size, column:column + size]
        patches.append(patch * np.exp(1j * noise * rng.standard_normal(patch.shape)))
    return patches, positions


def agreement_of(patches, positions) -> tuple[float, int]:
    mosaic = Mosaic(PIXEL, np.abs(physics.make_probe(32, 24)) ** 2)
    overlaps = [mosaic.add(np.abs(p), np.angle(p), x, y)
                for p, (x, y) in zip(patches, positions, strict=True)]
    met = [overlap for overlap in overlaps if overlap is not None]
    return agreement(met), len(met)


def test_patches_of_one_sample_agree_where_they_overlap_and_misplaced_ones_do_not():
    patches, positions = sample_patches()
    agreed, met = agreement_of(patches, positions)
    assert met == len(patches) - 1 and agreed == pytest.approx(1.0)
    # 0.1 rad of noise in each pixel's phase, a third of the sample's phase contrast:
    # agreeing less, but above the fit guard's bar
    assert AGREES < agreement_of(*sample_patches(noise=0.1))[0] < 0.9
    # each patch placed where the next frame was: positions out of step with the frames (on
    # a raster, the image would mostly be shifted whole)
    assert agreement_of(patches, np.roll(positions, 1, axis=0))[0] < 0.0
    # one answer for every frame
    assert agreement_of([patches[20]] * len(patches), positions)[0] < 0.0
    # flat patches say nothing: no agreement to judge
    assert np.isnan(agreement_of([np.ones((32, 32))] * 4, positions[:4])[0])


@pytest.mark.parametrize("align", [False, True])
def test_a_saved_mosaic_goes_on_stitching_as_it_was_made(tmp_path, align):
    weight = np.abs(physics.make_probe(16, 12)) ** 2
    phase = np.linspace(-1.0, 1.0, 256).reshape(16, 16)
    made = Mosaic(PIXEL, weight, align_phase=align)
    made.add(np.ones((16, 16)), phase, 0.0, 0.0)
    made.save(tmp_path / "mosaic.npz")
    loaded = Mosaic.load(tmp_path / "mosaic.npz")
    for mosaic in (made, loaded):  # the same patch again, a constant 1 rad off
        mosaic.add(np.ones((16, 16)), phase + 1.0, 4 * PIXEL, 0.0)
    assert loaded.align_phase == align
    np.testing.assert_array_equal(loaded.images()[1], made.images()[1])
