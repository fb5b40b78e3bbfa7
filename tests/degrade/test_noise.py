"""Noise: Gaussian, Poisson-Gaussian, film grain, segment-aware and JPEG-compressed noise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realrestorer.degrade import apply, degrade
from realrestorer.degrade.color import srgb_to_linear
from realrestorer.degrade.noise import KINDS, segments, standard_normal


def _params(kind: str, sigma: float = 0.06, seed: int = 11, **extra) -> dict:
    defaults = {
        "gaussian": {"gray": False},
        "poisson_gaussian": {"shot": 0.02, "read": 0.004},
        "film_grain": {"grain_px": 1.0, "chroma": 0.3},
        "segment": {"num_segments": 4, "levels": [0.25, 0.5, 0.75, 1.0]},
        "jpeg": {"quality": 60, "gray": False},
    }[kind]
    return {"task": "noise", "severity": 0.5, "kind": kind, "sigma": sigma, "seed": seed, **defaults, **extra}


def _highpass(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    return rgb - cv2.GaussianBlur(rgb, (0, 0), 1.5)


@pytest.mark.parametrize("kind", KINDS)
def test_raises_high_frequency_energy(kind, photo):
    """In the photo's smooth regions (where its own texture is weak) the high-pass energy rises."""
    clean = photo.astype(np.float32) / 255.0
    texture = cv2.GaussianBlur(np.abs(_highpass(clean)).sum(axis=2), (0, 0), 3.0)
    smooth = texture < np.quantile(texture, 0.3)
    out = apply("noise", clean, _params(kind))
    assert np.mean(_highpass(out)[smooth] ** 2) > 2.0 * np.mean(_highpass(clean)[smooth] ** 2)


def test_every_kind_is_drawn_and_recorded(photo):
    kinds = {degrade("noise", photo, np.random.default_rng(seed), 0.5)[1]["kind"] for seed in range(40)}
    assert kinds == set(KINDS)


def test_poisson_gaussian_variance_grows_with_signal():
    """Flat patches from dark to bright: the linear-light residual variance rises with the signal."""
    levels = np.linspace(0.1, 0.9, 5, dtype=np.float32)  # sRGB values of five flat vertical patches
    ramp = np.repeat(np.repeat(levels, 64)[None, :], 128, axis=0)
    clean = np.repeat(ramp[:, :, None], 3, axis=2)
    out = apply("noise", clean, _params("poisson_gaussian", shot=0.01, read=0.002))
    residual = srgb_to_linear(out) - srgb_to_linear(clean)
    variances = [residual[:, 64 * i + 4 : 64 * (i + 1) - 4].var() for i in range(5)]
    assert all(a < b for a, b in zip(variances, variances[1:])), variances
    assert variances[-1] > 5 * variances[0]


def _neighbour_correlation(residual: np.ndarray) -> float:
    a, b = residual[:, :-1].ravel(), residual[:, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_film_grain_is_spatially_correlated_unlike_gaussian():
    grey = np.full((128, 128, 3), 0.5, np.float32)
    grain = apply("noise", grey, _params("film_grain", grain_px=1.0))[:, :, 1] - 0.5
    white = apply("noise", grey, _params("gaussian"))[:, :, 1] - 0.5
    assert _neighbour_correlation(grain) > 0.5
    assert abs(_neighbour_correlation(white)) < 0.05


def test_film_grain_chroma_is_weaker_than_luma():
    grey = np.full((128, 128, 3), 0.5, np.float32)
    grain = apply("noise", grey, _params("film_grain", chroma=0.2)) - 0.5
    luma_part = grain.mean(axis=2)
    chroma_part = grain - luma_part[:, :, None]
    assert chroma_part.std() < 0.5 * luma_part.std()


def test_segment_noise_level_differs_per_segment():
    """Four flat bands of rising brightness: each band's noise follows its own level (darkest first)."""
    bands = np.linspace(0.2, 0.8, 4, dtype=np.float32)
    clean = np.repeat(np.repeat(bands, 32)[None, :, None], 128, axis=0).repeat(3, axis=2)
    levels = [0.3, 1.0, 0.6, 0.15]
    out = apply("noise", clean, _params("segment", levels=levels, sigma=0.05))
    stds = np.array([(out - clean)[:, 32 * i + 6 : 32 * (i + 1) - 6].std() for i in range(4)])
    ratios = stds / stds.max()
    assert np.allclose(ratios, np.array(levels) / max(levels), atol=0.07), ratios


def test_segmentation_is_deterministic_and_follows_content(photo):
    rgb = photo.astype(np.float32) / 255.0
    a, b = segments(rgb, 5), segments(rgb, 5)
    assert np.array_equal(a, b)
    assert len(np.unique(a)) == 5


def test_jpeg_compresses_the_noise():
    """The same noise field after JPEG loses high-frequency energy to quantisation."""
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.random((128, 128, 3), dtype=np.float32), (0, 0), 8.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    raw_noise = apply("noise", smooth, _params("gaussian"))
    compressed = apply("noise", smooth, _params("jpeg", quality=60))
    assert np.mean(_highpass(compressed) ** 2) < 0.7 * np.mean(_highpass(raw_noise) ** 2)
    assert np.mean(_highpass(compressed) ** 2) > 2 * np.mean(_highpass(smooth) ** 2)


def test_standard_normal_field_is_unit_normal():
    field = standard_normal(np.random.default_rng(0), (512, 512))
    assert field.dtype == np.float32
    assert abs(field.mean()) < 0.01 and abs(field.std() - 1.0) < 0.01
    assert abs(np.mean(field**4) - 3.0) < 0.1  # Gaussian kurtosis (estimator std ~0.02)
    assert np.array_equal(field, standard_normal(np.random.default_rng(0), (512, 512)))


def test_amount_rises_with_severity(photo):
    for seed in range(5):
        errors = [
            np.mean((degrade("noise", photo, np.random.default_rng(seed), s)[0].astype(float) - photo) ** 2)
            for s in (0.1, 0.5, 0.9)
        ]
        assert errors[0] < errors[1] < errors[2]
