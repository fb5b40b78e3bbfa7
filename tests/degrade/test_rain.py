"""Rain: the physical signature of oriented, depth-layered streaks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realrestorer.degrade import apply, degrade, rain
from realrestorer.degrade.color import linear_to_srgb, luminance, srgb_to_linear


def _streak_angle(clean: np.ndarray, params: dict) -> float:
    """Dominant streak direction of the rain layer, in degrees from vertical.

    The rain layer is the rainy image minus the same render with the streaks and
    droplets switched off (the veil alone, which carries the scene's own edges).
    From the structure tensor: gradients across streaks are perpendicular to them.
    Angle convention as recorded: positive leans right going down, direction (sin θ, cos θ).
    """
    rainy = apply("rain", clean, params)
    dry = {**params, "layers": [{**layer, "brightness": 0.0} for layer in params["layers"]], "droplet_brightness": 0.0}
    layer = luminance(rainy - apply("rain", clean, dry))
    gx = cv2.Sobel(layer, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(layer, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    gradient = 0.5 * np.degrees(np.arctan2(2.0 * jxy, jxx - jyy))  # from the x axis
    return float((-gradient + 90.0) % 180.0 - 90.0)


@pytest.mark.parametrize("angle", [-22.0, 0.0, 17.0, 28.0])
def test_rain_layer_is_oriented_at_the_recorded_angle(photo, angle):
    clean = photo.astype(np.float32) / 255.0
    params = rain.sample(clean, np.random.default_rng(3), 0.6)
    params["angle"] = angle
    measured = _streak_angle(clean, params)
    assert abs(measured - angle) < 10.0, (measured, angle)


def test_sampled_angles_are_measured_back(photos):
    for i, img in enumerate(photos):
        clean = img.astype(np.float32) / 255.0
        rainy, params = degrade("rain", clean, np.random.default_rng(10 + i), 0.7)
        assert np.array_equal(apply("rain", clean, params), rainy)
        assert -30.0 <= params["angle"] <= 30.0
        assert abs(_streak_angle(clean, params) - params["angle"]) < 10.0, params["angle"]


def test_near_layers_are_longer_wider_brighter_and_sparser(photo):
    params = rain.sample(photo.astype(np.float32) / 255.0, np.random.default_rng(0), 0.5)
    far, near = params["layers"][0], params["layers"][-1]
    assert 2 <= len(params["layers"]) <= 3
    assert near["length"] > far["length"] and near["width"] > far["width"]
    assert near["brightness"] > far["brightness"] and near["density"] < far["density"]


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges[1::2] - edges[::2]


@pytest.mark.parametrize("width,pixels", [(0.004, 1), (0.02, 4)])
def test_streaks_have_the_recorded_length_and_width(width, pixels):
    # A few seeds' streaks, rendered vertical: `length`·200 = 40 rows long (tapered ends included),
    # `width`·200 columns wide, peaking at the layer's brightness.
    layer = {"length": 0.2, "width": width, "density": 2.0 / (200 * 200), "brightness": 0.5}
    light = rain.streaks(np.random.default_rng(0), 200, 200, 0.0, [layer])
    lit = light > 1e-6
    assert 0.25 <= light.max() <= 0.5  # seed strength in [0.5, 1] times the brightness
    columns = _runs(lit.any(axis=0))
    assert columns.size >= 1 and set(columns) == {pixels}
    column = int(np.flatnonzero(lit.any(axis=0))[0])
    assert abs(int(_runs(lit[:, column]).max()) - 40) <= 1


def test_streak_length_is_relative_to_the_image_on_large_images():
    # Large images draw streaks on a smaller grid and upsample: lengths still scale with the image.
    layer = {"length": 0.1, "width": 0.002, "density": 2.0 / (1000 * 1000), "brightness": 0.5}
    light = rain.streaks(np.random.default_rng(0), 1000, 1000, 0.0, [layer])
    column = int(light.max(axis=0).argmax())  # the centre of the brightest streak
    assert abs(int(_runs(light[:, column] > 1e-4).max()) - 100) <= 4


def test_rain_brightens_and_veils_in_linear_light(photo):
    clean = photo.astype(np.float32) / 255.0
    light, p_light = degrade("rain", clean, np.random.default_rng(1), 0.1)
    heavy, p_heavy = degrade("rain", clean, np.random.default_rng(1), 0.9)
    # Rain adds light: almost no pixel gets darker (only the veil pulls highlights towards the rain colour).
    assert np.mean(luminance(light) >= luminance(clean) - 1e-3) > 0.95
    # The veil grows with severity and lowers global contrast.
    assert p_heavy["veil"] > p_light["veil"]
    assert luminance(heavy).std() < luminance(light).std() < luminance(clean).std() + 1e-3


def test_tabulated_render_matches_the_direct_composite(photo):
    # Screen the rain light onto the scene in linear light, then the veil: what render tabulates.
    clean = photo.astype(np.float32) / 255.0
    params = rain.sample(clean, np.random.default_rng(2), 0.8)
    height, width = clean.shape[:2]
    rng = np.random.default_rng(params["seed"])
    light = rain.streaks(rng, height, width, params["angle"], params["layers"])
    light += params["droplet_brightness"] * np.minimum(rain.droplet_layer(rng, height, width, params), 1.0)
    light = np.clip(light, 0.0, 1.0)[:, :, None] * np.asarray(params["colour"], np.float32)
    scene = srgb_to_linear(clean)
    veil = params["veil"]
    direct = linear_to_srgb(
        (scene + light * (1.0 - scene)) * (1.0 - veil) + veil * np.asarray(params["colour"], np.float32)
    )
    assert np.abs(apply("rain", clean, params) - direct).max() < 0.5 / 255
