"""The forward model against independent computations on small cases."""

import numpy as np
import pytest

from ptychoedge.sim import physics
from ptychoedge.sim.physics import PtychographySimulator

N = 16


def uniform_probe(n: int = N) -> np.ndarray:
    return np.full((n, n), 1.0 / n, np.complex64)  # sum |p|^2 = 1


def test_parseval_total_counts_follow_the_exit_wave():
    sim = PtychographySimulator(32, photons=1e5, seed=3)
    positions = physics.fermat_spiral_positions(20, 0.25e-6)
    intensities = sim.intensities(positions)
    exit_power = np.sum(np.abs(sim.probe * sim.object_patches(positions)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(intensities.sum(axis=(1, 2)), 1e5 * exit_power, rtol=1e-4)


def test_transparent_sample_gives_the_probe_diffraction():
    probe = physics.make_probe(N, 8.0)
    sim = PtychographySimulator(N, photons=1000, sample=np.ones((64, 64), np.complex64),
                                probe=probe)
    expected = 1000 * np.abs(np.fft.fftshift(np.fft.fft2(probe))) ** 2 / N**2
    np.testing.assert_allclose(sim.intensities(np.zeros((1, 2)))[0], expected,
                               rtol=1e-4, atol=1e-6)
    assert sim.intensities(np.zeros((1, 2)))[0].sum() == pytest.approx(1000, rel=1e-4)


def test_one_pixel_object_under_a_uniform_probe():
    # Transparent except one pixel absorbing `a` at (r, c) of the window: the exit wave
    # is (1 - a delta_rc) / N, and its orthonormal FFT is
    # F(k) = delta_k0 - a exp(-2 pi i k.(r, c) / N) / N^2.
    sample = np.ones((64, 64), np.complex64)
    absorption = 0.5
    sample[32, 32] = 1 - absorption
    sim = PtychographySimulator(N, photons=1.0, sample=sample, probe=uniform_probe())
    intensities = sim.intensities(np.zeros((1, 2)))[0]
    # Position 0 puts the window's top-left at the sample centre minus N/2.
    row = col = N // 2
    k = np.fft.fftfreq(N) * N
    phase = np.exp(-2j * np.pi * (k[:, None] * row + k[None, :] * col) / N)
    field = -absorption * phase / N**2
    field[0, 0] += 1.0
    np.testing.assert_allclose(intensities, np.fft.fftshift(np.abs(field) ** 2), atol=1e-7)
    assert intensities[N // 2, N // 2] == pytest.approx((1 - absorption / N**2) ** 2, rel=1e-5)


def test_outside_the_sample_is_free_space():
    sim = PtychographySimulator(N, sample=np.full((32, 32), 0.5, np.complex64),
                                probe=uniform_probe())
    far = np.array([[1e-3, -1e-3]])  # 100 000 pixels away
    np.testing.assert_array_equal(sim.object_patches(far)[0], np.ones((N, N)))
    half_off = np.array([[16 * physics.OBJECT_PIXEL_SIZE, 0.0]])
    patch = sim.object_patches(half_off)[0]
    assert set(np.unique(patch.real)) == {0.5, 1.0}


def test_ground_truth_patches_are_the_sample_under_the_window():
    sim = PtychographySimulator(N, seed=5, sample_shape=(128, 128))
    positions = physics.raster_positions(3, 2, 4 * physics.OBJECT_PIXEL_SIZE)
    frames, truth = sim.frames(positions)
    for (x, y), patch in zip(sim.positions_to_pixels(positions), truth, strict=True):
        np.testing.assert_array_equal(patch, sim.sample[y:y + N, x:x + N])
    assert frames.shape == truth.shape == (6, N, N)


def test_same_seed_same_frames_other_seed_other_frames():
    positions = physics.fermat_spiral_positions(5, 0.2e-6)
    first = PtychographySimulator(32, seed=1).frames(positions)[0]
    again = PtychographySimulator(32, seed=1).frames(positions)[0]
    other = PtychographySimulator(32, seed=2).frames(positions)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_poisson_noise_has_the_right_mean_and_variance():
    sim = PtychographySimulator(N, photons=N * N * 50.0, sample=np.ones((32, 32), np.complex64),
                                probe=physics.make_probe(N, N, defocus=0.0))
    positions = np.zeros((400, 2))
    expected = sim.intensities(positions[:1])[0]
    counts = sim.frames(positions, rng=np.random.default_rng(0))[0].astype(float)
    bright = expected > 20
    mean, variance = counts.mean(axis=0)[bright], counts.var(axis=0)[bright]
    np.testing.assert_allclose(mean, expected[bright], rtol=0.05)
    np.testing.assert_allclose(np.median(variance / mean), 1.0, rtol=0.1)


def test_counts_are_clipped_to_the_pixel_type():
    sim = PtychographySimulator(N, photons=1e12, dtype=np.uint8)
    frames, _ = sim.frames(np.zeros((1, 2)))
    assert frames.dtype == np.uint8 and frames.max() == 255
    frames32, _ = PtychographySimulator(N, photons=1e12, dtype=np.uint32).frames(np.zeros((1, 2)))
    assert frames32.dtype == np.uint32 and frames32.max() > 2**16


def test_raster_pattern():
    positions = physics.raster_positions(4, 3, 1e-6)
    assert positions.shape == (12, 2)
    np.testing.assert_allclose(positions.mean(axis=0), 0, atol=1e-18)
    assert np.unique(positions[:, 0]).size == 4 and np.unique(positions[:, 1]).size == 3
    np.testing.assert_allclose(np.diff(np.unique(positions[:, 0])), 1e-6)


def test_fermat_spiral_spacing_is_the_step():
    step = 0.25e-6
    positions = physics.fermat_spiral_positions(400, step)
    distances = np.hypot(*(positions[:, None] - positions[None]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    assert positions.shape == (400, 2)
    assert np.median(nearest) == pytest.approx(step, rel=0.1)
    np.testing.assert_allclose(positions.mean(axis=0), 0, atol=step / 100)


def test_step_for_overlap():
    assert physics.step_for_overlap(1e-6, 0.6) == pytest.approx(0.4e-6)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            physics.step_for_overlap(1e-6, bad)


def test_probe_is_normalised_and_focused():
    probe = physics.make_probe(64, 20.0)
    assert np.sum(np.abs(probe) ** 2) == pytest.approx(1.0, rel=1e-5)
    power = np.abs(probe) ** 2
    yy, xx = np.indices(probe.shape) - 31.5
    assert power[np.hypot(yy, xx) < 12].sum() > 0.9


def test_sample_is_deterministic_and_in_range():
    a, b = physics.make_sample((64, 64), 4), physics.make_sample((64, 64), 4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).min() >= 0.25 and np.abs(a).max() <= 1.0 + 1e-6
    assert np.ptp(np.angle(a)) > 0.5  # a phase object too, not amplitude only


@pytest.mark.parametrize("kwargs", [
    {"detector_size": 4}, {"photons": 0}, {"dtype": np.float32}, {"dtype": np.int16},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        PtychographySimulator(**{"detector_size": N, **kwargs})


def test_bad_positions():
    sim = PtychographySimulator(N)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        sim.frames(np.zeros(3))
