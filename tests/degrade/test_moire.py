"""Moiré: the beat between a display's sub-pixel grid and the sensor's Bayer lattice."""

from __future__ import annotations

import numpy as np
import pytest

from realrestorer.degrade import apply, degrade

SIZE = 256
FREQ_X = np.fft.fftfreq(SIZE)[None, :]
FREQ_Y = np.fft.fftfreq(SIZE)[:, None]
WINDOW = np.outer(np.hanning(SIZE), np.hanning(SIZE))


def _params(**overrides) -> dict:
    params = {
        "task": "moire",
        "severity": 0.8,
        "pitch": 1.5,
        "rotation_deg": 7.0,
        "tilt_x_deg": 10.0,
        "tilt_y_deg": -6.0,
        "phase": [0.3, 0.6],
        "stripe_fill": 0.25,
        "row_fill": 0.85,
        "sensor_fill": 0.7,
        "lens_blur_px": 0.3,
        "sensor_blur_px": 0.0,
        "strength": 1.0,
    }
    return {**params, **overrides}


def _power(rgb: np.ndarray) -> np.ndarray:
    """Power spectrum summed over colour channels (moiré is mostly colour, so luma alone hides it)."""
    rgb = rgb.astype(np.float64)
    rgb = rgb - rgb.mean(axis=(0, 1))
    return sum(np.abs(np.fft.fft2(rgb[:, :, c] * WINDOW)) ** 2 for c in range(3))


def _high_band() -> np.ndarray:
    """Frequencies above 0.1 cycles/px, minus the Bayer carriers where plain demosaicing leaves energy."""
    def near(fx, fy):
        return np.hypot(np.abs(FREQ_X) - fx, np.abs(FREQ_Y) - fy) < 0.04

    return (np.hypot(FREQ_X, FREQ_Y) >= 0.1) & ~near(0.5, 0.0) & ~near(0.0, 0.5) & ~near(0.5, 0.5)


def test_adds_an_isolated_high_frequency_peak(photo):
    clean = photo.astype(np.float32) / 255.0
    band = _high_band()
    moire = _power(apply("moire", clean, _params()))
    gridless = _power(apply("moire", clean, _params(strength=0.0)))  # same capture chain, grid removed
    peak = np.argmax(np.where(band, moire - gridless, -np.inf))
    assert moire.flat[peak] > 50 * np.median(moire[band]), "the peak must stand out of the band"
    assert moire.flat[peak] > 20 * _power(clean).flat[peak], "the clean photo has no such peak"
    assert moire.flat[peak] > 20 * gridless.flat[peak], "the peak comes from the display grid"


@pytest.mark.parametrize("pitch", [1.6, 1.3, 0.6])
def test_fringe_frequency_is_the_alias_of_the_display_pitch(pitch):
    """On a flat grey card the only pattern is the grid, aliased by the red/blue sites' 2-pixel lattice."""
    grey = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    params = _params(pitch=pitch, rotation_deg=0.0, tilt_x_deg=0.0, tilt_y_deg=0.0)
    power = _power(apply("moire", grey, params))
    power[0, 0] = 0.0
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    grid_frequency = 1.0 / pitch
    alias = abs(grid_frequency - 0.5 * round(grid_frequency / 0.5))
    assert abs(abs(FREQ_X[0, ix]) - alias) <= 1.5 / SIZE and FREQ_Y[iy, 0] == 0.0


def test_grid_vanishes_when_each_sensor_pixel_spans_one_period(photo):
    """A sensor footprint of exactly one display period integrates every stripe to the same light."""
    exact = dict(pitch=1.5, sensor_fill=1.5, lens_blur_px=0.0)
    with_grid = apply("moire", photo, _params(**exact))
    without = apply("moire", photo, _params(**exact, strength=0.0))
    assert np.abs(with_grid.astype(int) - without.astype(int)).max() <= 1


def test_severity_strengthens_the_fringes(photo):
    energies = []
    for severity in (0.1, 0.5, 0.9):
        out, params = degrade("moire", photo, np.random.default_rng(4), severity)
        gridless = apply("moire", photo, {**params, "strength": 0.0})
        energies.append(np.mean((out.astype(float) - gridless.astype(float)) ** 2))
    assert energies[0] < energies[1] < energies[2]


def test_geometry_is_recorded(photo):
    _, params = degrade("moire", photo, np.random.default_rng(0), 0.5)
    assert {"pitch", "rotation_deg", "tilt_x_deg", "tilt_y_deg"} <= set(params)
    assert not 0.8 < params["pitch"] < 1.2
