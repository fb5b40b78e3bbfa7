"""Haze: the physical signature of the atmospheric scattering model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realrestorer.degrade import apply, degrade, haze
from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear
from realrestorer.degrade.depth import PriorDepth


def _dark_channel(rgb: np.ndarray) -> np.ndarray:
    return cv2.erode(rgb.min(axis=2), np.ones((7, 7), np.uint8))


def _local_std(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mean = cv2.blur(grey, (7, 7))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - mean * mean, 0.0))


def _near_far_changes(
    clean: np.ndarray, hazy: np.ndarray, depth: np.ndarray, airlight: list[float]
) -> dict[str, tuple[float, float]]:
    """(near, far) halves split at the median depth: dark-channel rise and local contrast kept.

    The rise is measured as the fraction of the way the dark channel moved towards the
    airlight: a pixel that is already bright has less room to rise, whatever its depth.
    """
    far = depth > np.median(depth)
    near = ~far
    clean_dark = _dark_channel(clean)
    rise = _dark_channel(hazy) - clean_dark
    room = np.maximum(min(airlight) - clean_dark, 0.0)
    hazy_std, clean_std = _local_std(hazy), _local_std(clean)
    return {
        "dark_rise": (float(rise[near].sum() / room[near].sum()), float(rise[far].sum() / room[far].sum())),
        "contrast_kept": (
            float(hazy_std[near].sum() / clean_std[near].sum()),
            float(hazy_std[far].sum() / clean_std[far].sum()),
        ),
    }


@pytest.mark.parametrize("severity", [0.2, 0.6, 1.0])
def test_haze_grows_with_the_prior_depth(photos, severity):
    for img in photos:
        clean = img.astype(np.float32) / 255.0
        depth = PriorDepth().depth(clean)
        for seed in range(3):
            hazy, params = degrade("haze", clean, np.random.default_rng(seed), severity)
            assert params["depth"] == "prior"
            changes = _near_far_changes(clean, hazy, depth, params["airlight"])
            (rise_near, rise_far), (kept_near, kept_far) = changes["dark_rise"], changes["contrast_kept"]
            assert rise_far > rise_near > 0.0, changes
            assert kept_far < kept_near < 1.0, changes


def test_haze_follows_an_explicit_depth_map(photo):
    clean = photo.astype(np.float32) / 255.0
    # Far on the right, near on the left: a layout the vertical prior would never guess.
    ramp = np.tile(np.linspace(0.0, 1.0, clean.shape[1], dtype=np.float32), (clean.shape[0], 1))
    hazy, params = degrade("haze", clean, np.random.default_rng(4), 0.7, depth=ramp)
    assert params["depth"] == "external"
    changes = _near_far_changes(clean, hazy, ramp, params["airlight"])
    assert changes["dark_rise"][1] > changes["dark_rise"][0] + 0.05, changes
    assert changes["contrast_kept"][1] < changes["contrast_kept"][0], changes


def test_render_is_the_scattering_model_with_the_recorded_beta_and_airlight():
    # A black scene leaves only the airlight term: I_lin = A_lin · (1 − exp(−β·d)).
    black = np.zeros((32, 48, 3), np.float32)
    depth = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (32, 1))
    params = {
        "beta": 1.5,
        "airlight": [0.9, 0.88, 0.93],
        "near": 0.1,
        "depth": "prior",
        "fog": False,
        "fog_amount": 0.0,
        "fog_cells": 3,
        "seed": 0,
    }
    hazy = apply("haze", black, params, depth=depth)
    t = np.exp(-1.5 * (0.1 + 0.9 * depth))[:, :, None]
    expected = srgb_to_linear(np.array(params["airlight"], np.float32)) * (1.0 - t)
    assert np.allclose(srgb_to_linear(hazy), expected, atol=2e-3)


def test_fog_texture_makes_the_haze_inhomogeneous():
    grey = np.full((64, 96, 3), 0.3, np.float32)
    flat_depth = np.full((64, 96), 0.5, np.float32)  # normalises to 0: only the `near` offset remains
    base = {
        "beta": 1.5,
        "airlight": [0.9, 0.9, 0.9],
        "near": 0.5,
        "depth": "prior",
        "fog_amount": 0.6,
        "fog_cells": 3,
        "seed": 11,
    }
    homogeneous = apply("haze", grey, {**base, "fog": False}, depth=flat_depth)
    foggy = apply("haze", grey, {**base, "fog": True}, depth=flat_depth)
    assert np.ptp(homogeneous) < 1e-6
    assert np.ptp(foggy) > 0.05
    # The texture is smooth (fog patches, not pixel noise) and drawn from the seed.
    grad = np.abs(np.diff(foggy[:, :, 0], axis=1)).mean()
    assert grad < np.ptp(foggy) / 10
    assert not np.array_equal(foggy, apply("haze", grey, {**base, "fog": True, "seed": 12}, depth=flat_depth))


def test_sampled_airlight_is_near_white_and_beta_rises_with_severity(photo):
    rgb = photo.astype(np.float32) / 255.0
    betas = []
    for severity in (0.0, 0.5, 1.0):
        params = haze.sample(rgb, np.random.default_rng(0), severity)
        assert min(params["airlight"]) > 0.75 and np.ptp(params["airlight"]) < 0.07
        betas.append(params["beta"])
    assert betas[0] < betas[1] < betas[2]


def test_tabulated_render_matches_the_direct_formula(photo):
    # The (level, t) table must reproduce (J_lin − A)·t + A in linear light, also off the 8-bit grid.
    rng = np.random.default_rng(0)
    clean = photo.astype(np.float32) / 255.0
    off_grid = np.clip(clean + rng.uniform(-0.002, 0.002, clean.shape).astype(np.float32), 0.0, 1.0)
    depth = np.tile(np.linspace(0.0, 1.0, clean.shape[0], dtype=np.float32)[:, None], (1, clean.shape[1]))
    params = haze.sample(clean, rng, 0.8)
    for image in (clean, off_grid):
        hazy = apply("haze", image, params, depth=depth)
        t = haze.transmission(depth, params, *depth.shape)[:, :, None]
        airlight = srgb_to_linear(np.asarray(params["airlight"], np.float32))
        direct = linear_to_srgb((srgb_to_linear(image) - airlight) * t + airlight)
        assert np.abs(hazy - direct).max() < 0.5 / 255
