"""Reflection: transmission and reflection layers mixed in linear light with the recorded weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from realrestorer.degrade import apply, degrade


def _to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


@pytest.fixture(scope="module")
def glass_scene() -> np.ndarray:
    """The scene reflected in the glass: a different photo, same size as `photo`."""
    return cv2.resize(skdata.coffee(), (256, 256), interpolation=cv2.INTER_AREA)


def _processed(layer: np.ndarray, params: dict) -> np.ndarray:
    """The reflection layer as the recorded params say the camera saw it (float64 or float32 H×W×3)."""
    layer = layer.astype(np.float32)
    h, w = layer.shape[:2]
    if params["mode"] == "defocus":
        layer = cv2.GaussianBlur(layer, (0, 0), params["blur_sigma"])
    else:
        dx, dy = params["ghost_offset"]
        moved = cv2.warpAffine(layer, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REPLICATE)
        layer = layer + params["ghost_gamma"] * moved
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = params["vignette_center"]
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.25 * (h * h + w * w))
    return layer * (1.0 - params["vignette"] * np.minimum(d2, 1.0))[..., None]


def _params_with_mode(photo, glass_scene, mode: str) -> tuple[np.ndarray, dict]:
    for seed in range(50):
        out, params = degrade("reflection", photo, np.random.default_rng(seed), 0.8, reflection=glass_scene)
        if params["mode"] == mode:
            return out, params
    raise AssertionError(f"no {mode!r} reflection in 50 seeds")


@pytest.mark.parametrize("mode,blur_sigma", [("ghost", None), ("defocus", None), ("defocus", 14.0)])
def test_output_is_the_linear_light_blend_of_the_recorded_layers(photo, glass_scene, mode, blur_sigma):
    out, params = _params_with_mode(photo, glass_scene, mode)
    margin = 0
    if blur_sigma is not None:
        # A wide blur is computed at reduced resolution: it matches the exact one away from the borders,
        # where the two treat the missing outside differently.
        params = {**params, "blur_sigma": blur_sigma}
        out = apply("reflection", photo, params, reflection=glass_scene)
        margin = int(3 * blur_sigma)
    assert params["layer"] == "external" and params["alpha"] < 1.0 and params["beta"] > 0.0
    transmission = photo.astype(np.float64) / 255.0
    reflected = glass_scene.astype(np.float64) / 255.0

    linear_blend = params["alpha"] * _to_linear(transmission) + params["beta"] * _processed(_to_linear(reflected), params)
    expected = _to_srgb(linear_blend) * 255.0
    inside = (slice(margin, photo.shape[0] - margin), slice(margin, photo.shape[1] - margin))
    error = np.abs(out.astype(np.float64) - expected)[inside]
    assert error.max() <= 3.0 and error.mean() < 0.6, f"linear-light blend: max {error.max():.2f}, mean {error.mean():.3f}"

    # The same weights applied to sRGB values miss by far more: the mixing happens in light, not in code values.
    srgb_blend = params["alpha"] * transmission + params["beta"] * _processed(reflected, params)
    srgb_error = np.abs(out.astype(np.float64) - np.clip(srgb_blend, 0.0, 1.0) * 255.0)[inside]
    assert srgb_error.mean() > 5.0 and srgb_error.mean() > 10 * error.mean(), f"sRGB blend error {srgb_error.mean():.2f}"


def test_external_params_need_the_reflection_image(photo, glass_scene):
    out, params = degrade("reflection", photo, np.random.default_rng(0), 0.5, reflection=glass_scene)
    assert params["layer"] == "external"
    assert np.array_equal(apply("reflection", photo, params, reflection=glass_scene), out)
    with pytest.raises(ValueError, match="reflection image"):
        apply("reflection", photo, params)


def test_without_an_image_the_layer_is_made_from_the_params(photo):
    layers = {degrade("reflection", photo, np.random.default_rng(seed), 0.5)[1]["layer"] for seed in range(12)}
    assert layers == {"scene", "procedural"}


def test_any_size_and_layout_of_reflection_image(photo):
    gray16 = (np.linspace(0, 65535, 90 * 140).reshape(90, 140)).astype(np.uint16)
    out, params = degrade("reflection", photo, np.random.default_rng(2), 0.5, reflection=gray16)
    assert out.shape == photo.shape and params["layer"] == "external"


def test_strength_rises_with_severity(photo, glass_scene):
    betas = [degrade("reflection", photo, np.random.default_rng(5), s, reflection=glass_scene)[1]["beta"] for s in (0.0, 0.5, 1.0)]
    assert 0.0 < betas[0] < betas[1] < betas[2]


def test_transmission_is_not_moved(photo):
    # With reflectance zero what remains is the transmitted image, dimmed but exactly in place.
    _, params = degrade("reflection", photo, np.random.default_rng(3), 0.5)
    out = apply("reflection", photo, {**params, "beta": 0.0}).astype(np.float64)
    expected = _to_srgb(params["alpha"] * _to_linear(photo / 255.0)) * 255.0
    assert np.abs(out - expected).max() <= 1.5
