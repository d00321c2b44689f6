"""The forward model checked against independent numpy computations on small cases."""

import numpy as np
import pytest

from ptychoedge.sim import physics
from ptychoedge.sim.physics import OBJECT_PIXEL_SIZE, PtychographySimulator

N = 16


def transparent(shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.ones(shape, np.complex64)


def uniform_probe(n: int = N) -> np.ndarray:
    return np.full((n, n), 1.0 / n, np.complex64)  # sum |p|^2 = 1


def nearest_neighbour_distances(positions: np.ndarray) -> np.ndarray:
    distances = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1)


def test_total_counts_follow_parseval():
    sim = PtychographySimulator(32, photons=2e5, seed=3, sample_shape=(256, 256))
    positions = physics.fermat_spiral_positions(30, 0.1e-6)
    exit_power = np.sum(np.abs(sim.probe[0].astype(complex) * sim.object_patches(positions)) ** 2,
                        axis=(1, 2))
    assert exit_power.min() < 0.9  # the sample absorbs, so this is not the trivial case
    np.testing.assert_allclose(sim.intensities(positions).sum(axis=(1, 2)), 2e5 * exit_power,
                               rtol=1e-4)


def test_transparent_sample_gives_the_probe_diffraction():
    probe = physics.make_probe(N, 8.0, defocus=2.0)
    sim = PtychographySimulator(N, photons=1000, sample=transparent(), probe=probe)
    # Unnormalised FFT divided by N^2 in intensity is the orthonormal one.
    expected = 1000 * np.fft.fftshift(np.abs(np.fft.fft2(probe.astype(complex))) ** 2) / N**2
    positions = np.array([[0.0, 0.0], [3e-8, -5e-8]])
    for intensity in sim.intensities(positions):
        np.testing.assert_allclose(intensity, expected, rtol=1e-4, atol=1e-4)
        assert intensity.sum() == pytest.approx(1000, rel=1e-5)


def test_one_absorbing_pixel_under_a_uniform_probe():
    # The window is transparent but for transmission t at (row, col). The exit wave is
    # (1 + (t - 1) delta_(row, col)) / N, whose orthonormal FFT is
    # F(k, l) = delta_(k, l),0 + (t - 1) exp(-2 pi i (k row + l col) / N) / N^2.
    t = 0.2 + 0.3j
    sample = transparent()
    sample[30, 27] = t
    sim = PtychographySimulator(N, photons=1.0, sample=sample, probe=uniform_probe())
    # Position 0: window top-left at sample centre (32, 32) minus N // 2.
    top_left = 32 - N // 2
    row, col = 30 - top_left, 27 - top_left
    k = np.arange(N)
    field = (t - 1) * np.exp(-2j * np.pi * (k[:, None] * row + k[None, :] * col) / N) / N**2
    field[0, 0] += 1
    expected = np.fft.fftshift(np.abs(field) ** 2)
    intensity = sim.intensities(np.zeros((1, 2)))[0]
    np.testing.assert_allclose(intensity, expected, atol=1e-7)
    # Off the direct beam the pattern is flat: |t - 1|^2 / N^4 everywhere.
    off_beam = np.delete(intensity.ravel(), (N // 2) * N + N // 2)
    np.testing.assert_allclose(off_beam, abs(t - 1) ** 2 / N**4, rtol=1e-3)


def test_patches_are_the_sample_under_the_window():
    sim = PtychographySimulator(N, seed=5, sample_shape=(96, 80))
    positions = physics.raster_positions(3, 2, 6 * OBJECT_PIXEL_SIZE)
    frames, truth = sim.frames(positions)
    corners = sim.positions_to_pixels(positions)
    # Sample centre (x, y) = (40, 48); the first position is 6 pixels left, 3 up.
    np.testing.assert_array_equal(corners[0], [40 - N // 2 - 6, 48 - N // 2 - 3])
    np.testing.assert_array_equal(corners[-1], [40 - N // 2 + 6, 48 - N // 2 + 3])
    for (x, y), patch in zip(corners, truth, strict=True):
        np.testing.assert_array_equal(patch, sim.sample[y:y + N, x:x + N])
    assert frames.shape == truth.shape == (6, N, N)
    assert truth.dtype == np.complex64


def test_outside_the_sample_is_free_space():
    sample = np.full((32, 32), 0.5 + 0.5j, np.complex64)
    sim = PtychographySimulator(N, sample=sample, probe=uniform_probe())
    far = np.array([[1e-3, -1e-3], [-50 * OBJECT_PIXEL_SIZE, 0.0]])
    np.testing.assert_array_equal(sim.object_patches(far), np.ones((2, N, N)))
    # Window from x = 16 + 20 - 8 = 28 to 44 on a 32-wide sample: 4 columns inside.
    edge = sim.object_patches(np.array([[20 * OBJECT_PIXEL_SIZE, 0.0]]))[0]
    np.testing.assert_array_equal(edge[:, :4], sample[8:24, 28:32])
    np.testing.assert_array_equal(edge[:, 4:], 1)
    # Free space diffracts like no sample at all: all counts in the direct beam.
    intensity = sim.intensities(far[:1])[0]
    assert intensity[N // 2, N // 2] == pytest.approx(sim.photons, rel=1e-5)


def test_frames_are_repeatable_for_a_seed_and_differ_between_seeds():
    positions = physics.fermat_spiral_positions(6, 0.2e-6)
    first = PtychographySimulator(32, seed=1, sample_shape=(128, 128)).frames(positions)
    again = PtychographySimulator(32, seed=1, sample_shape=(128, 128)).frames(positions)
    other = PtychographySimulator(32, seed=2, sample_shape=(128, 128)).frames(positions)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])
    # The seed sets the noise too, not only the sample.
    same_sample = [PtychographySimulator(32, seed=seed, sample=transparent()).frames(positions)[0]
                   for seed in (1, 2)]
    assert not np.array_equal(*same_sample)


def test_default_noise_does_not_depend_on_how_the_scan_is_split():
    sim = PtychographySimulator(N, seed=7, sample_shape=(64, 64))
    positions = physics.raster_positions(3, 3, 5 * OBJECT_PIXEL_SIZE)
    whole = sim.frames(positions)[0]
    np.testing.assert_array_equal(whole, sim.frames(positions)[0])
    parts = [sim.frames(positions[i:i + 2])[0] for i in range(0, 9, 2)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    # A given generator is used as is: fresh noise.
    assert not np.array_equal(whole, sim.frames(positions, rng=np.random.default_rng(0))[0])


def test_poisson_noise_mean_and_variance():
    # A uniform probe on a transparent sample puts all photons in the direct beam;
    # a one-pixel probe spreads them evenly over the detector: lambda = photons / N^2.
    probe = np.zeros((N, N), np.complex64)
    probe[3, 5] = 1.0
    lam = 40.0
    sim = PtychographySimulator(N, photons=lam * N**2, sample=transparent(), probe=probe)
    np.testing.assert_allclose(sim.intensities(np.zeros((1, 2)))[0], lam, rtol=1e-5)
    counts = sim.frames(np.zeros((500, 2)), rng=np.random.default_rng(11))[0].astype(float)
    # 128 000 draws of Poisson(40): the standard error of the mean is about 0.02.
    assert counts.mean() == pytest.approx(lam, abs=0.1)
    assert counts.var() == pytest.approx(lam, rel=0.03)
    # Frames and pixels are independent of each other, not copies.
    assert abs(np.corrcoef(counts[0].ravel(), counts[1].ravel())[0, 1]) < 0.2


def test_counts_saturate_at_the_pixel_type_maximum():
    sim = PtychographySimulator(N, photons=1e9, dtype=np.uint8, sample_shape=(64, 64))
    for rng in (None, np.random.default_rng(2)):
        frames, _ = sim.frames(np.zeros((2, 2)), rng=rng)
        assert frames.dtype == np.uint8
        assert frames.max() == 255
        # The direct beam holds far more than 255 counts: clipped, not wrapped around.
        assert np.all(frames[:, N // 2, N // 2] == 255)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_frames_have_the_requested_pixel_type(dtype):
    sim = PtychographySimulator(N, photons=1e10, dtype=dtype, sample_shape=(64, 64))
    frames, truth = sim.frames(np.zeros((1, 2)))
    assert frames.dtype == dtype and frames.shape == (1, N, N)
    assert truth.dtype == np.complex64
    expected = sim.intensities(np.zeros((1, 2)))[0]
    # The noise is sqrt(count), tiny at 1e10 photons: frames follow the clipped expectation.
    clipped = np.minimum(expected, np.iinfo(dtype).max)
    assert np.all(np.abs(frames[0] - clipped) <= 6 * np.sqrt(clipped) + 1)


def test_raster_pattern():
    step = 0.5e-6
    positions = physics.raster_positions(4, 3, step)
    assert positions.shape == (12, 2)
    np.testing.assert_allclose(positions.mean(axis=0), 0, atol=1e-18)
    # Row by row, x fastest.
    np.testing.assert_allclose(positions[:4, 1], positions[0, 1])
    np.testing.assert_allclose(np.diff(positions[:4, 0]), step)
    np.testing.assert_allclose(positions[4, 1] - positions[0, 1], step)
    np.testing.assert_allclose(nearest_neighbour_distances(positions), step)


@pytest.mark.parametrize("n_points", [50, 400])
def test_fermat_spiral(n_points):
    step = 0.25e-6
    positions = physics.fermat_spiral_positions(n_points, step)
    assert positions.shape == (n_points, 2)
    np.testing.assert_allclose(positions.mean(axis=0), 0, atol=1e-12 * step)
    nearest = nearest_neighbour_distances(positions)
    assert np.median(nearest) == pytest.approx(step, rel=0.05)
    assert nearest.min() > 0.5 * step
    # Equal area per point: the radius grows as sqrt(n).
    radius = np.linalg.norm(positions, axis=1).max()
    assert radius == pytest.approx(0.59 * step * np.sqrt(n_points), rel=0.1)


def test_step_for_overlap():
    assert physics.step_for_overlap(1e-6, 0.6) == pytest.approx(0.4e-6)
    assert physics.step_for_overlap(2e-6, 0.0) == pytest.approx(2e-6)
    for diameter, overlap in [(1e-6, -0.1), (1e-6, 1.0), (0.0, 0.5), (-1e-6, 0.5)]:
        with pytest.raises(ValueError):
            physics.step_for_overlap(diameter, overlap)


def test_default_probe_overlap_at_quarter_micron_steps():
    sim = PtychographySimulator(128, sample=transparent())
    power = sim.illumination()
    y, x = np.indices(power.shape) - 64
    inside = power[np.hypot(x, y) <= 32].sum()
    assert 0.85 < inside < 0.99  # a 64 pixel (0.64 um) spot
    overlap = 1 - 0.25e-6 / (64 * OBJECT_PIXEL_SIZE)
    assert 0.55 < overlap < 0.7


@pytest.mark.parametrize(("diameter", "defocus"), [(20.0, 6.0), (30.0, 0.0), (48.0, 3.0)])
def test_probe_is_normalised_and_about_its_diameter(diameter, defocus):
    probe = physics.make_probe(96, diameter, defocus)
    assert probe.dtype == np.complex64 and probe.shape == (96, 96)
    assert np.sum(np.abs(probe) ** 2) == pytest.approx(1.0, rel=1e-5)
    power = np.abs(probe) ** 2
    y, x = np.indices(power.shape) - 48
    r = np.hypot(x, y)
    assert power[r <= 0.6 * diameter].sum() > 0.9
    assert power[r <= 0.25 * diameter].sum() < 0.8  # not a much smaller spot either


def test_bad_probe_arguments():
    for args in [(4, 2.0), (64, 0.0), (64, 80.0), (64, 4.0, 6.0)]:
        with pytest.raises(ValueError):
            physics.make_probe(*args)


def test_sample_is_deterministic_structured_and_in_range():
    a = physics.make_sample((128, 96), 4)
    assert a.shape == (128, 96) and a.dtype == np.complex64
    np.testing.assert_array_equal(a, physics.make_sample((128, 96), 4))
    assert not np.array_equal(a, physics.make_sample((128, 96), 5))
    amplitude, phase = np.abs(a), np.angle(a)
    assert amplitude.min() >= 0.3 - 1e-6 and amplitude.max() <= 1 + 1e-6
    assert np.abs(phase).max() <= np.pi / 2 + 1e-5
    assert np.ptp(amplitude) > 0.3 and np.ptp(phase) > 1.0
    # Structure at fine and coarse scales: power in both halves of the spectrum.
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2
    ky, kx = np.indices(a.shape)
    k = np.hypot((ky - 64) / 128, (kx - 48) / 96)
    assert spectrum[k > 0.25].sum() > 1e-3 * spectrum.sum()
    assert spectrum[(k > 0) & (k < 0.05)].sum() > 0.1 * spectrum.sum()


@pytest.mark.parametrize("kwargs", [
    {"detector_size": 4}, {"detector_size": 8192}, {"photons": 0}, {"photons": -5.0},
    {"photons": float("inf")}, {"dtype": np.float32}, {"dtype": np.int16},
    {"dtype": np.uint64}, {"dtype": "not a type"}, {"pixel_size": 0.0}, {"seed": -1},
    {"probe": np.ones((8, 8))}, {"probe": np.zeros((N, N))},
])
def test_bad_simulator_arguments(kwargs):
    with pytest.raises(ValueError):
        PtychographySimulator(**{"detector_size": N, "sample_shape": (32, 32), **kwargs})


@pytest.mark.parametrize("positions", [np.zeros(3), np.zeros((3, 3)), np.zeros((2, 2, 2)),
                                       np.array([[np.nan, 0.0]])])
def test_bad_positions(positions):
    sim = PtychographySimulator(N, sample_shape=(32, 32))
    for method in (sim.frames, sim.intensities, sim.object_patches, sim.positions_to_pixels):
        with pytest.raises(ValueError, match="positions"):
            method(positions)


def test_bad_scan_patterns():
    for call in (lambda: physics.raster_positions(0, 3, 1e-6),
                 lambda: physics.raster_positions(3, 3, 0.0),
                 lambda: physics.fermat_spiral_positions(0, 1e-6),
                 lambda: physics.fermat_spiral_positions(10, -1e-6)):
        with pytest.raises(ValueError):
            call()


def test_a_400_frame_scan_of_128_pixels_is_fast():
    import time

    sim = PtychographySimulator(128)
    positions = physics.fermat_spiral_positions(400, 0.25e-6)
    start = time.perf_counter()
    frames, truth = sim.frames(positions)
    elapsed = time.perf_counter() - start
    assert frames.shape == truth.shape == (400, 128, 128)
    assert frames.dtype == np.uint16
    assert frames.sum(axis=(1, 2)).mean() == pytest.approx(sim.photons, rel=0.5)
    assert elapsed < 5.0
