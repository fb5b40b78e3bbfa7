"""Low light: underexposed raw capture, shot + read noise, developed without auto-exposure."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realrestorer.degrade import apply, degrade
from realrestorer.degrade.color import luminance
from realrestorer.degrade.lowlight import rgb_to_camera
from tests.conftest import psnr


def _relative_noise(rgb: np.ndarray, flat: np.ndarray) -> float:
    """High-pass residual std over local mean brightness, in the photo's flat regions."""
    y = luminance(rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0))
    local_mean = cv2.GaussianBlur(y, (0, 0), 2.0)
    residual = y - local_mean
    return float(residual[flat].std() / local_mean[flat].mean())


def _flat_regions(photo: np.ndarray) -> np.ndarray:
    y = luminance(photo.astype(np.float32) / 255.0)
    gradient = np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))
    smooth = cv2.GaussianBlur(gradient, (0, 0), 2.0)
    return (smooth < np.quantile(smooth, 0.3)) & (cv2.GaussianBlur(y, (0, 0), 2.0) > 0.15)


def test_darker_and_relatively_noisier(photo):
    flat = _flat_regions(photo)
    clean = photo.astype(np.float32) / 255.0
    out, _ = degrade("lowlight", clean, np.random.default_rng(0), 0.6)
    assert luminance(out).mean() < 0.5 * luminance(clean).mean()
    assert _relative_noise(out, flat) > 2.0 * _relative_noise(clean, flat)


def test_severity_darkens_and_adds_noise(photo):
    flat = _flat_regions(photo)
    outs = [degrade("lowlight", photo, np.random.default_rng(1), s)[0].astype(np.float32) / 255 for s in (0.1, 0.5, 0.9)]
    brightness = [luminance(o).mean() for o in outs]
    noise = [_relative_noise(o, flat) for o in outs]
    assert brightness[0] > brightness[1] > brightness[2]
    assert noise[0] < noise[1] < noise[2]


def test_no_auto_exposure_brightness_follows_the_exposure_cut(photo):
    clean = photo.astype(np.float32) / 255.0
    _, params = degrade("lowlight", clean, np.random.default_rng(2), 0.5)
    quiet = {**params, "shot": 1e-12, "read": 1e-14}
    half = apply("lowlight", clean, {**quiet, "exposure": 0.5})
    quarter = apply("lowlight", clean, {**quiet, "exposure": 0.25})
    assert luminance(quarter).mean() < 0.8 * luminance(half).mean() < 0.8 * luminance(clean).mean()


def test_camera_pipeline_inverts_exactly_without_exposure_cut_or_noise(photo):
    """Unprocess then develop with exposure 1, no noise and 16-bit codes gives the photo back.

    The photo is smoothed first so that bilinear demosaicing (the one lossy step) loses nothing.
    """
    clean = cv2.GaussianBlur(photo.astype(np.float32) / 255.0, (0, 0), 3.0)
    _, params = degrade("lowlight", clean, np.random.default_rng(3), 0.5)
    identity = {**params, "exposure": 1.0, "shot": 1e-12, "read": 1e-14, "bits": 16}
    out = apply("lowlight", clean, identity)
    assert psnr(out, clean) > 40.0
    assert np.abs(out.mean(axis=(0, 1)) - clean.mean(axis=(0, 1))).max() < 0.01


def test_noise_is_shot_dominated_in_bright_raw():
    """Raw noise variance rises with signal (shot noise), visible as noisier bright than dark patches."""
    from realrestorer.degrade.lowlight import add_raw_noise

    raw = np.concatenate([np.full((64, 64), 0.02, np.float32), np.full((64, 64), 0.4, np.float32)], axis=1)
    noisy = add_raw_noise(raw, shot=1e-3, read=1e-6, rng=np.random.default_rng(0))
    dark, bright = (noisy - raw)[:, :64].var(), (noisy - raw)[:, 64:].var()
    assert dark == pytest.approx(1e-3 * 0.02 + 1e-6, rel=0.1)
    assert bright == pytest.approx(1e-3 * 0.4 + 1e-6, rel=0.1)


def test_colour_matrix_keeps_white_and_rejects_bad_weights():
    matrix = rgb_to_camera([0.1, 0.2, 0.3, 0.4])
    assert np.allclose(matrix.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="ccm_weights"):
        rgb_to_camera([1.0, -1.0, 0.0, 0.0])
