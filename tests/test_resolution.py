"""What the frames resolve (inference/resolution.py): two half-scans compared ring by ring
say which scales are the object's, and the amplitude filtered to them is truer."""

from __future__ import annotations

import numpy as np
import pytest

from ptychoedge.inference.comparison import compare_images
from ptychoedge.inference.instrument import Instrument, Orientation
from ptychoedge.inference.manifest import load_manifest
from ptychoedge.inference.refine import refine
from ptychoedge.inference.resolution import compared, half_scans
from ptychoedge.sim import physics
from ptychoedge.sim.probes import named_probe
from ptychoedge.sim.samples import named_sample

PIXEL = 10e-9
SIDE = 192


def smooth_object(rng, scale: float) -> np.ndarray:
    """A weak absorber and a stronger phase, varying over `scale` pixels."""
    fy, fx = np.fft.fftfreq(SIDE)[:, None], np.fft.fftfreq(SIDE)[None, :]
    smoothing = np.exp(-2 * (np.pi * scale) ** 2 * (fx ** 2 + fy ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(SIDE, SIDE))) * smoothing).real
    field /= field.std()
    return np.exp(-0.05 * field + 0.5j * field)


def noisy(obj: np.ndarray, rng, sigma: float) -> np.ndarray:
    return obj + sigma * (rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape))


def correlation(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    return float(np.corrcoef(a[region], b[region])[0, 1])


def test_identical_halves_agree_at_every_scale():
    rng = np.random.default_rng(0)
    image = noisy(smooth_object(rng, 3.0), rng, 0.02)
    region = np.ones(image.shape, bool)
    resolution = compared(image, image * np.exp(0.7j), region, PIXEL)  # another constant phase
    assert np.all(resolution.object_frc > 0.999) and np.all(resolution.amplitude_frc > 0.999)
    assert resolution.half_period(resolution.object_frc) == PIXEL


def test_halves_of_noise_alone_resolve_nothing_and_filter_to_the_mean():
    rng = np.random.default_rng(1)
    one, other = (noisy(np.ones((SIDE, SIDE)), rng, 0.05) for _ in range(2))
    region = np.zeros(one.shape, bool)
    region[16:-16, 16:-16] = True
    resolution = compared(one, other, region, PIXEL)
    # within a few times each ring's noise, 1 / sqrt(its pixels)
    assert np.all(np.abs(resolution.amplitude_frc[1:]) < 4 / np.sqrt(resolution.pixels[1:]))
    assert resolution.half_period(resolution.amplitude_frc) > 10 * PIXEL
    filtered = resolution.filtered_amplitude(np.abs(one), region)
    assert filtered[region].std() < 0.2 * np.abs(one)[region].std()
    assert np.all(filtered[~region] == 0)


def test_the_filtered_amplitude_keeps_the_object_and_drops_the_noise():
    """The amplitude's contrast a tenth of the phase's, the noise alike in both: the
    halves agree at coarse scales only, and the filter keeps those."""
    rng = np.random.default_rng(2)
    truth = smooth_object(rng, 4.0)
    one, other = noisy(truth, rng, 0.04), noisy(truth, rng, 0.04)
    whole = (one + other) / 2
    region = np.zeros(truth.shape, bool)
    region[20:-20, 12:-30] = True
    resolution = compared(one, other, region, PIXEL)
    amplitude_limit = resolution.half_period(resolution.amplitude_frc)
    assert 2 * PIXEL < amplitude_limit < 20 * PIXEL
    # the phase's contrast is higher: it is resolved to finer scales
    assert resolution.half_period(resolution.object_frc) < amplitude_limit
    filtered = resolution.filtered_amplitude(np.abs(whole), region)
    raw = correlation(np.abs(whole), np.abs(truth), region)
    assert raw < 0.9 < 0.97 < correlation(filtered, np.abs(truth), region)  # seen 0.87, 0.99


@pytest.mark.slow
def test_half_scans_of_a_refined_scan_lift_a_weak_absorbers_amplitude(tmp_path):
    """Particles under a defocused zone plate, 100 frames (seen: amplitude correlation
    0.75 raw, 0.97 filtered; SSIM 0.85 -> 0.94)."""
    known = load_manifest("ptychonn-default").instrument
    instrument = Instrument(known.geometry, named_probe("zoneplate-defocus", known.window,
                                                       known.object_pixel_size), known.photons)
    simulator = physics.simulator_for(instrument, seed=1,
                                      sample=named_sample("particles", (384, 384), 1))
    positions = physics.fermat_spiral_positions(100, 0.25e-6)
    frames, _ = simulator.frames(positions)
    refinement = refine(frames, positions, instrument, Orientation(), 600.0, most_sweeps=40)
    resolution = half_scans(frames, positions, instrument, Orientation(), refinement, 600.0,
                            most_sweeps=40)
    amplitude, phase = refinement.images()
    filtered = resolution.filtered_amplitude(np.abs(refinement.obj), refinement.lit)
    scores = [compare_images(image, phase, refinement.lit, refinement.pixel_size,
                             refinement.origin, simulator.sample, simulator.pixel_size)[0]
              for image in (amplitude, filtered)]
    assert scores[1]["amplitude_correlation"] > scores[0]["amplitude_correlation"] + 0.1
    assert scores[1]["amplitude_ssim"] > scores[0]["amplitude_ssim"]
    assert scores[1]["phase_correlation"] == pytest.approx(scores[0]["phase_correlation"])
    assert (refinement.pixel_size
            < resolution.half_period(resolution.object_frc)
            <= resolution.half_period(resolution.amplitude_frc))
    report = resolution.report()
    assert report["halves_seconds"] > 0 and len(report["object_frc"]) == len(
        report["frequencies"])
    resolution.save_plot(tmp_path / "resolution.png", "particles")
    assert (tmp_path / "resolution.png").stat().st_size > 10_000
