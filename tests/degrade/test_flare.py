"""Lens flare: light added around a recorded source, falling off with distance."""

from __future__ import annotations

import numpy as np

from realrestorer.degrade import degrade
from realrestorer.degrade.flare import point_spread


def _to_linear(srgb_u8: np.ndarray) -> np.ndarray:
    x = srgb_u8.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _ring_means(energy: np.ndarray, source: list[float], edges: list[tuple[float, float]]) -> list[float]:
    h, w = energy.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - source[0], yy - source[1])
    return [float(energy[(r >= lo) & (r < hi)].mean()) for lo, hi in edges]


def test_added_light_falls_off_from_the_source(photo):
    # A dimmed photo leaves headroom, so saturation cannot hide the flare near the source.
    dim = (photo.astype(np.float32) * 0.5).astype(np.uint8)
    rings = [(0, 8), (20, 40), (60, 100)]
    for seed in range(6):
        out, params = degrade("flare", dim, np.random.default_rng(seed), 0.6)
        energy = (_to_linear(out) - _to_linear(dim)).mean(axis=2)
        inner, middle, outer = _ring_means(energy, params["source"], rings)
        assert inner > middle > outer > 0.0, f"seed {seed}: ring means {inner:.4f} {middle:.4f} {outer:.4f}"
        assert inner > 0.3, "the source region must become much brighter"


def test_flare_only_adds_light(photo):
    out, _ = degrade("flare", photo, np.random.default_rng(4), 0.8)
    added = _to_linear(out) - _to_linear(photo)
    assert added.min() > -2e-3, "a flare is extra light: no pixel may get darker"
    assert added.mean() > 0.01


def test_source_is_the_bright_spot_when_taken_from_the_image():
    img = np.full((96, 128, 3), 40, np.uint8)
    img[60:68, 20:28] = 255  # one lamp
    found = 0
    for seed in range(10):
        _, params = degrade("flare", img, np.random.default_rng(seed), 0.5)
        if params["source_from_image"]:
            found += 1
            x, y = params["source"]
            assert abs(x - 23.5) < 4 and abs(y - 63.5) < 4, params["source"]
    assert found >= 5, "a bright spot should usually be chosen as the light source"


def test_psf_is_wider_in_red_than_in_blue():
    # Diffraction scales with wavelength: the red part of the PSF spreads further than the blue.
    _, params = degrade("flare", np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0), 0.5)
    for blades in (0, 6):
        psf = point_spread({**params, "blades": blades, "dust": 0.02, "scratches": 0})
        n = psf.shape[0]
        yy, xx = np.mgrid[0:n, 0:n] - n // 2
        r2 = (xx * xx + yy * yy)[..., None]
        second_moment = (psf * r2).sum(axis=(0, 1)) / psf.sum(axis=(0, 1))
        assert second_moment[0] > 1.2 * second_moment[2], f"blades={blades}: RGB second moments {second_moment}"
        assert np.unravel_index(np.argmax(psf[..., 1]), psf.shape[:2]) == (n // 2, n // 2)


def test_brighter_with_severity(photo):
    means = [_to_linear(degrade("flare", photo, np.random.default_rng(1), s)[0]).mean() for s in (0.0, 0.5, 1.0)]
    assert means[0] > _to_linear(photo).mean() and means[0] < means[1] < means[2]
