"""Probes of real optics and sample families, checked against the physics they claim."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptychoedge.inference import forward
from ptychoedge.inference.instrument import PROBE_PATH, Instrument, read_cxi, write_cxi
from ptychoedge.inference.scan_file import load_scan
from ptychoedge.iocs import cli
from ptychoedge.sim import make_scan, physics, probes, samples

ENERGY = 10_000.0  # eV
DX = 10e-9  # m
N = 128
ZONE_PLATE = {"energy_ev": ENERGY, "diameter": 160e-6, "outer_zone": 30e-9}


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1 from its integral (1/pi) int_0^pi cos(t - x sin t) dt, to 1e-8 here."""
    t = np.linspace(0, np.pi, 2001)
    values = np.cos(t[None, :] - np.asarray(x)[:, None] * np.sin(t[None, :]))
    return np.trapezoid(values, t, axis=1) / np.pi


def annular_airy_first_zero(obscuration: float) -> float:
    """First zero of the focal amplitude 2J1(v)/v - e^2 2J1(ev)/(ev), v = 2 pi NA r / wl."""
    def amplitude(v: float) -> float:
        full = 2 * bessel_j1(np.array([v]))[0] / v
        if obscuration == 0:
            return full
        ev = obscuration * v
        return full - obscuration**2 * 2 * bessel_j1(np.array([ev]))[0] / ev
    low, high = 2.0, 4.5  # brackets the first zero for obscurations up to 0.5
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if amplitude(low) * amplitude(middle) > 0 else (low, middle)
    return (low + high) / 2


def first_minimum(profile: np.ndarray) -> float:
    """Index of the first local minimum, refined by a parabola through its neighbours."""
    k = int(np.argmax((profile[1:-1] < profile[:-2]) & (profile[1:-1] < profile[2:]))) + 1
    a, b, c = profile[k - 1:k + 2]
    return k + 0.5 * (a - c) / (a - 2 * b + c)


def radii(n: int) -> np.ndarray:
    y, x = np.indices((n, n))
    return np.hypot(y - n // 2, x - n // 2)


@pytest.mark.parametrize("obscuration", [0.0, 0.375])
def test_focused_zone_plate_first_dark_ring_is_the_annular_airy_one(obscuration):
    dx = 2.5e-9  # fine sampling: the ring is 13-15 pixels out
    probe = probes.zone_plate_probe(256, dx, **ZONE_PLATE,
                                    stop_diameter=obscuration * ZONE_PLATE["diameter"])
    row = np.abs(probe[0, 128, 128:]) ** 2
    measured = first_minimum(row) * dx
    # v = 2 pi NA r / wavelength and NA = wavelength / (2 drn): r = v drn / pi.
    theory = annular_airy_first_zero(obscuration) * ZONE_PLATE["outer_zone"] / np.pi
    if obscuration == 0:
        assert theory == pytest.approx(1.2197 * ZONE_PLATE["outer_zone"], rel=1e-4)
    assert measured == pytest.approx(theory, rel=0.02)
    assert row[int(round(measured / dx))] < 0.01 * row[0]


@pytest.mark.parametrize("defocus", [150e-6, -150e-6])
def test_defocused_zone_plate_is_the_geometric_annulus_with_its_stop_hole(defocus):
    stop = 0.375
    probe = probes.zone_plate_probe(N, DX, **ZONE_PLATE, defocus=defocus,
                                    stop_diameter=stop * ZONE_PLATE["diameter"])
    intensity = np.abs(probe[0]) ** 2
    r = radii(N) * DX
    numerical_aperture = forward.wavelength(ENERGY) / (2 * ZONE_PLATE["outer_zone"])
    outer = numerical_aperture * abs(defocus)  # the cone's radius at the sample: 0.31 um
    assert intensity[r < 1.1 * outer].sum() > 0.9
    assert intensity[r < 0.8 * stop * outer].sum() < 0.06  # the stop's shadow
    # In the far field the pupil itself: dark inside the stop, lit in the annulus.
    far = np.abs(np.fft.fftshift(np.fft.fft2(probe[0]))) ** 2
    q = radii(N) / (N * DX)
    pupil = 1 / (2 * ZONE_PLATE["outer_zone"])
    hole = far[q < 0.8 * stop * pupil].mean()
    annulus = far[(q > 1.2 * stop * pupil) & (q < 0.8 * pupil)].mean()
    assert hole < 0.01 * annulus


@pytest.mark.parametrize("fresnel_number, axis_gain", [(3, 4.0), (2, 0.0), (1, 4.0)])
def test_pinhole_axis_follows_fresnel_zones(fresnel_number, axis_gain):
    # On the axis of a circular aperture of radius a: I / I0 = 4 sin^2(pi a^2 / (2 wl z)).
    radius = 0.3e-6
    distance = radius**2 / (fresnel_number * forward.wavelength(ENERGY))
    aperture = probes.pinhole_probe(N, DX, energy_ev=ENERGY, diameter=2 * radius, distance=0)
    propagated = probes.pinhole_probe(N, DX, energy_ev=ENERGY, diameter=2 * radius,
                                      distance=distance)
    gain = abs(propagated[0, N // 2, N // 2]) ** 2 / abs(aperture[0, N // 2, N // 2]) ** 2
    assert gain == pytest.approx(axis_gain, abs=0.2)


@pytest.mark.parametrize("kind", list(probes.PROBE_KINDS))
def test_presets_have_unit_intensity_fit_the_window_and_are_centred(kind):
    probe = probes.named_probe(kind, N, DX)
    assert probe.shape == (1, N, N) and probe.dtype == np.complex64
    assert np.sum(np.abs(probe.astype(complex)) ** 2) == pytest.approx(1.0, abs=1e-5)
    assert probes.encircled_diameter(probe, DX, 0.9) <= 0.55 * N * DX
    intensity = np.abs(probe[0]) ** 2
    y, x = np.indices(intensity.shape)
    centroid = np.array([np.sum(y * intensity), np.sum(x * intensity)]) / intensity.sum()
    assert np.allclose(centroid, N // 2, atol=0.5)


def test_default_kind_is_the_simulators_own_probe():
    simulator = physics.PtychographySimulator(N, sample_shape=(64, 64))
    assert np.allclose(probes.named_probe("default", N, DX)[0], simulator.probe, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zoneplate-defocus", "pinhole"])
def test_modes_are_orthogonal_strongest_first_and_sum_to_one(kind):
    probe = probes.named_probe(kind, N, DX, modes=3)
    assert probe.shape == (3, N, N)
    flat = probe.reshape(3, -1).astype(np.complex128)
    overlaps = flat.conj() @ flat.T
    assert np.trace(overlaps).real == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(overlaps - np.diag(np.diag(overlaps)), 0, atol=1e-6)
    weights = probes.mode_weights(probe)
    assert np.all(np.diff(weights) <= 1e-9) and weights[1] > 1e-3


@pytest.mark.slow
def test_a_larger_source_spreads_intensity_into_more_modes():
    small = probes.zone_plate_probe(64, DX, **ZONE_PLATE, modes=2, source_rms=3e-9)
    large = probes.zone_plate_probe(64, DX, **ZONE_PLATE, modes=2, source_rms=15e-9)
    assert probes.mode_weights(small)[0] > probes.mode_weights(large)[0]


def test_optics_that_do_not_fit_are_refused():
    with pytest.raises(probes.ProbeError, match="larger than"):
        probes.zone_plate_probe(N, DX, **ZONE_PLATE, defocus=2e-3)
    with pytest.raises(probes.ProbeError, match="smaller than the outer zone"):
        probes.zone_plate_probe(N, 40e-9, **ZONE_PLATE)
    with pytest.raises(probes.ProbeError, match="source"):
        probes.zone_plate_probe(N, DX, **ZONE_PLATE, modes=2)
    with pytest.raises(probes.ProbeError, match="unknown probe"):
        probes.named_probe("laser", N, DX)


@pytest.mark.slow
def test_probe_files_round_trip(tmp_path):
    probe = probes.named_probe("zoneplate-defocus", 64, DX, modes=2)
    np.save(tmp_path / "probe.npy", probe * 7)
    with h5py.File(tmp_path / "scan.cxi", "w") as f:
        f[PROBE_PATH] = probe[0]
    assert np.allclose(probes.load_probe(tmp_path / "probe.npy", 64), probe, atol=1e-6)
    assert np.allclose(probes.named_probe(str(tmp_path / "scan.cxi"), 64, DX),
                       probe[:1] / np.sqrt(probes.mode_weights(probe)[0]), atol=1e-6)


@pytest.mark.parametrize("array, reason", [
    (np.ones((64, 64)), "must be complex"),
    (np.ones((2, 2, 64, 64), np.complex64), "shape"),
    (np.ones((64, 32), np.complex64), "shape"),
    (np.zeros((64, 64), np.complex64), "no intensity"),
    (np.full((64, 64), np.nan, np.complex64), "non-finite"),
    (np.ones((32, 32), np.complex64), "32 x 32 but the frames are 64 x 64"),
])
def test_bad_probe_files_are_refused_with_the_reason(tmp_path, array, reason):
    path = tmp_path / "probe.npy"
    np.save(path, array)
    with pytest.raises(probes.ProbeError, match=reason) as error:
        probes.load_probe(path, 64)
    assert isinstance(error.value, ValueError) and str(path) in str(error.value)


def test_probe_files_without_a_probe_are_refused(tmp_path):
    with h5py.File(tmp_path / "scan.cxi", "w") as f:
        f["entry_1/data_1/data"] = np.zeros((2, 8, 8))
    with pytest.raises(probes.ProbeError, match="no probe at entry_1/instrument_1"):
        probes.load_probe(tmp_path / "scan.cxi")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(probes.ProbeError, match="not a readable"):
        probes.load_probe(tmp_path / "junk.npy")
    with pytest.raises(probes.ProbeError, match="no such file"):
        probes.load_probe(tmp_path / "missing.npy")


def test_presets_are_at_the_simulated_instruments_energy_and_pixel():
    assert probes.ZONE_PLATE["energy_ev"] == probes.PINHOLE["energy_ev"] == physics.ENERGY_EV
    geometry = physics.geometry(128)
    assert geometry.distance_m == pytest.approx(0.7743, abs=1e-4)
    assert geometry.object_pixel_size(128) == pytest.approx(DX)
    # make-scan --pixel: the same instrument, its detector where the object pixel is that.
    probe = probes.named_probe("default", 64, 2 * DX)
    instrument = make_scan.instrument_for(probe, 1e5, 2 * DX)
    assert instrument.object_pixel_size == pytest.approx(2 * DX)
    assert instrument.geometry.energy_ev == physics.ENERGY_EV
    assert instrument.geometry.pixel_size_m == physics.DETECTOR_PIXEL


# -- samples -----------------------------------------------------------------------

SHAPE = (256, 320)
FAMILIES = [kind for kind, entry in samples.SAMPLE_KINDS.items() if entry.phase_max]


@pytest.mark.parametrize("kind", FAMILIES)
def test_families_are_one_material_within_their_stated_ranges(kind):
    sample = samples.named_sample(kind, SHAPE, seed=1)
    assert sample.shape == SHAPE and sample.dtype == np.complex64
    phase_max = samples.SAMPLE_KINDS[kind].phase_max
    delta_beta = 100.0 if kind == "strong-phase" else 30.0 if kind == "fibres" else 10.0
    amplitude = np.abs(sample).astype(np.float64)
    assert amplitude.max() <= 1 + 1e-6
    assert amplitude.min() == pytest.approx(np.exp(-phase_max / delta_beta), rel=1e-4)
    if kind != "strong-phase":  # its film covers everything
        assert np.max(amplitude) == pytest.approx(1.0, abs=1e-6)  # some empty space
    # One projected thickness sets both: the phase is delta/beta x ln(amplitude).
    thickness_phase = delta_beta * np.log(amplitude)
    wrapped = np.angle(np.exp(1j * thickness_phase))
    assert np.allclose(np.angle(sample * np.exp(-1j * wrapped)), 0, atol=2e-3)


def test_strong_phase_wraps():
    sample = samples.named_sample("strong-phase", SHAPE, seed=2)
    thickness_phase = 100.0 * np.log(np.abs(sample).astype(np.float64))
    assert thickness_phase.min() < -2 * np.pi
    phase = np.angle(sample)
    jumps = np.abs(np.diff(phase, axis=1))
    assert np.sum(jumps > np.pi) > 10  # wrapped phase: jumps of about 2 pi between pixels
    assert phase.max() > 3.0 and phase.min() < -3.0


@pytest.mark.parametrize("kind", list(samples.SAMPLE_KINDS))
def test_samples_are_deterministic_for_a_seed_and_differ_between_seeds(kind):
    first = samples.named_sample(kind, SHAPE, seed=5)
    assert np.array_equal(first, samples.named_sample(kind, SHAPE, seed=5))
    assert not np.allclose(first, samples.named_sample(kind, SHAPE, seed=6), atol=1e-3)
    assert np.all(np.isfinite(first)) and np.all(np.abs(first) > 0)


@pytest.mark.parametrize("kind", list(samples.SAMPLE_KINDS))
@pytest.mark.parametrize("shape", [(8, 8), (9, 300), (300, 9)])
def test_samples_come_in_any_shape(kind, shape):
    sample = samples.named_sample(kind, shape, seed=1)
    assert sample.shape == shape and np.all(np.isfinite(sample))
    assert np.all(np.abs(sample) > 0) and np.all(np.abs(sample) <= 1 + 1e-6)


def test_default_kind_is_make_sample_unchanged():
    assert np.array_equal(samples.named_sample("default", SHAPE, 3),
                          physics.make_sample(SHAPE, 3))


def test_siemens_star_has_its_spokes_and_sharp_edges():
    spokes = 24
    sample = samples.siemens_star((512, 512), seed=0, spokes=spokes)
    opaque = np.abs(sample) < np.exp(-0.5 / 10)  # more than half the full thickness
    # Around a circle halfway out (off the resolution rings): 2 edges per spoke. The
    # centre is within 3% of the middle, so a 100 pixel circle stays on the wedges.
    angles = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
    centre = np.argwhere(np.abs(sample) < 1)
    cy, cx = (centre.min(axis=0) + centre.max(axis=0)) / 2
    y = np.rint(cy + 100 * np.sin(angles)).astype(int)
    x = np.rint(cx + 100 * np.cos(angles)).astype(int)
    ring = opaque[y, x]
    assert np.count_nonzero(ring != np.roll(ring, 1)) == 2 * spokes
    # Edges are sharp: at most a pixel of grey between empty and full thickness.
    grey = (np.abs(sample) > np.exp(-0.95 / 10)) & (np.abs(sample) < np.exp(-0.05 / 10))
    assert grey.mean() < 0.1


def test_labyrinth_is_dense_with_the_stated_period():
    period = 16.0
    sample = samples.labyrinth((512, 512), seed=0, period=period)
    thickness = -10.0 * np.log(np.abs(sample).astype(np.float64))
    assert 0.35 < np.mean(thickness > 0.5) < 0.65
    power = np.abs(np.fft.fft2(thickness - thickness.mean())) ** 2
    f = np.hypot(np.fft.fftfreq(512)[:, None], np.fft.fftfreq(512)[None, :])
    peak = f.ravel()[np.argmax(power)]
    assert 1 / peak == pytest.approx(period, rel=0.2)


def test_particles_span_decades_of_size():
    sample = samples.particles((512, 512), seed=0, radii=(1.5, 40.0))
    thickness = -10.0 * np.log(np.abs(sample).astype(np.float64))
    # A sphere's centre is a local peak of height proportional to its radius.
    inner = thickness[1:-1, 1:-1]
    neighbours = [thickness[1 + dy:511 + dy, 1 + dx:511 + dx]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    peaks = inner[(inner > 0) & np.all([inner > other for other in neighbours], axis=0)]
    assert len(peaks) > 50
    assert peaks.max() / peaks.min() > 10


def test_thickness_scale_multiplies_phase_and_absorption():
    thin = samples.named_sample("labyrinth", SHAPE, 4)
    thick = samples.named_sample("labyrinth", SHAPE, 4, thickness=2.0)
    assert np.allclose(np.angle(thick), 2 * np.angle(thin), atol=1e-5)
    assert np.allclose(np.abs(thick), np.abs(thin) ** 2, atol=1e-5)
    default = samples.named_sample("default", SHAPE, 4).astype(np.complex128)
    tripled = samples.named_sample("default", SHAPE, 4, thickness=3.0)
    assert np.allclose(tripled, default**3, atol=1e-5)
    with pytest.raises(samples.SampleError, match="unknown sample"):
        samples.named_sample("cheese", SHAPE)


# -- scans with their instrument ---------------------------------------------------

SOURCE, DETECTOR = "entry_1/instrument_1/source_1", "entry_1/instrument_1/detector_1"


def test_write_cxi_paths_and_units(tmp_path):
    n = 32
    instrument = Instrument(physics.geometry(n), probes.named_probe("default", n, DX), 4e4)
    frames = np.arange(3 * n * n, dtype=np.uint32).reshape(3, n, n)
    positions = np.array([[0.0, 0.0], [1e-7, -2e-7], [-3e-7, 4e-7]])
    sample = samples.named_sample("labyrinth", (40, 50), 1)
    write_cxi(tmp_path / "scan.cxi", instrument, frames, positions, sample=sample,
              sample_pixel_size=DX)
    with h5py.File(tmp_path / "scan.cxi", "r") as f:
        assert f.attrs["cxi_version"] == 150
        assert np.array_equal(f["entry_1/data_1/data"][()], frames)
        translation = f["entry_1/sample_1/geometry_1/translation"]
        assert np.array_equal(translation[()], np.column_stack([positions, np.zeros(3)]))
        units = {path: f[path].attrs["units"] for path in (
            "entry_1/sample_1/geometry_1/translation", f"{SOURCE}/energy",
            f"{DETECTOR}/distance", f"{DETECTOR}/x_pixel_size", f"{DETECTOR}/y_pixel_size",
            "entry_1/image_1/x_pixel_size", "entry_1/image_1/y_pixel_size")}
        assert units.pop(f"{SOURCE}/energy") == "J" and set(units.values()) == {"m"}
        assert f[f"{SOURCE}/energy"][()] == pytest.approx(physics.ENERGY_EV * 1.602176634e-19)
        assert f[f"{DETECTOR}/distance"][()] == instrument.geometry.distance_m
        assert f[f"{DETECTOR}/x_pixel_size"][()] == f[f"{DETECTOR}/y_pixel_size"][()] \
            == physics.DETECTOR_PIXEL
        probe = f[f"{SOURCE}/illumination"][()]
        np.testing.assert_allclose(probe, instrument.probe * np.sqrt(4e4), rtol=1e-5,
                                   atol=1e-4)
        assert np.array_equal(f["entry_1/image_1/data"][()], sample)
        assert f["entry_1/image_1/x_pixel_size"][()] == f["entry_1/image_1/y_pixel_size"][()] \
            == DX
        # Position 0 is the object's centre pixel, (x, y) = (nx // 2, ny // 2).
        assert tuple(f["entry_1/image_1/origin"][()]) == (25, 20)
    with pytest.raises(ValueError, match="positions"):
        write_cxi(tmp_path / "bad.cxi", instrument, frames, positions[:2])


def test_make_scan_is_a_ptychoedge_subcommand():
    assert "make-scan" in cli.build_parser().format_help()


def test_make_scan_refuses_a_probe_file_for_other_frames_with_the_reason(tmp_path, capsys):
    np.save(tmp_path / "probe.npy", probes.named_probe("default", 32, DX))
    assert cli.main(["make-scan", "--probe", str(tmp_path / "probe.npy"), "--size", "64",
                     "--out", str(tmp_path / "scan.cxi")]) == 2
    assert "32 x 32 but the frames are 64 x 64" in capsys.readouterr().err
    assert not (tmp_path / "scan.cxi").exists()


@pytest.mark.slow
def test_make_scan_writes_a_cxi_scan_with_its_instrument(tmp_path):
    out = tmp_path / "scan.cxi"
    assert cli.main(["make-scan", "--probe", "pinhole", "--probe-modes", "2", "--sample",
                     "fibres", "--points", "7", "--photons", "1e5", "--out", str(out)]) == 0
    frames, positions = load_scan(out)  # what `ptychoedge sim --replay` reads
    assert frames.shape == (7, N, N) and positions.shape == (7, 2)
    with h5py.File(out, "r") as f:
        assert f[f"{SOURCE}/energy"][()] == pytest.approx(ENERGY * 1.602176634e-19)
        assert f[f"{SOURCE}/energy"].attrs["units"] == "J"
        assert f[f"{DETECTOR}/distance"].attrs["units"] == "m"
        distance = f[f"{DETECTOR}/distance"][()]
        pixel = f[f"{DETECTOR}/x_pixel_size"][()]
        assert pixel == f[f"{DETECTOR}/y_pixel_size"][()] == 75e-6
        assert forward.object_pixel_size(ENERGY, distance, pixel, N) == pytest.approx(DX)
        probe = f[f"{SOURCE}/illumination"][()]
        assert probe.shape == (2, N, N) and np.iscomplexobj(probe)
        assert np.sum(np.abs(probe.astype(complex)) ** 2) == pytest.approx(1e5, rel=1e-4)
        translation = f["entry_1/sample_1/geometry_1/translation"][()]
        assert np.allclose(translation[:, :2], positions) and np.all(translation[:, 2] == 0)
        image = f["entry_1/image_1/data"][()]
        assert f["entry_1/image_1/x_pixel_size"][()] == pytest.approx(DX)
    assert np.array_equal(image, samples.named_sample("fibres", image.shape, 0))
    # The frames are the true object under the stored probe: counts as expected.
    assert frames.sum(axis=(1, 2)).mean() == pytest.approx(1e5, rel=0.05)
    # and the instrument reads back as the one the frames were simulated with.
    instrument = read_cxi(out, photons=1e5)
    assert instrument.modes == 2 and instrument.object_pixel_size == pytest.approx(DX)
    assert instrument.geometry.frame_shape == (N, N)
