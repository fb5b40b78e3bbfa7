"""The contract every degradation model keeps, checked for all of them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realrestorer.degrade import ALL_TASKS, TASKS, apply, degrade, prompt
from tests.conftest import psnr


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_seed_same_output(task, photo):
    a, pa = degrade(task, photo, np.random.default_rng(7), 0.6)
    b, pb = degrade(task, photo, np.random.default_rng(7), 0.6)
    assert pa == pb
    assert np.array_equal(a, b)
    c, _ = degrade(task, photo, np.random.default_rng(8), 0.6)
    assert not np.array_equal(a, c), "a different seed should give a different degradation"


@pytest.mark.parametrize("task", ALL_TASKS)
def test_apply_reproduces_from_json_params(task, photo):
    out, params = degrade(task, photo, np.random.default_rng(3), 0.5)
    params = json.loads(json.dumps(params))  # must survive JSON exactly
    assert params["task"] == task and params["severity"] == 0.5
    assert np.array_equal(apply(task, photo, params), out)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_degrades_and_keeps_shape(task, photo):
    out, _ = degrade(task, photo, np.random.default_rng(1), 0.5)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    assert psnr(out, photo) < 45.0, "a degradation must change the image"


@pytest.mark.parametrize("task", ALL_TASKS)
def test_severity_is_monotone(task, photos):
    levels = (0.1, 0.5, 0.9)
    means = []
    for severity in levels:
        scores = [
            psnr(degrade(task, img, np.random.default_rng(seed), severity)[0], img)
            for img in photos
            for seed in range(4)
        ]
        means.append(np.mean(scores))
    assert means[0] > means[1] > means[2], f"mean PSNR by severity {dict(zip(levels, means))}"


@pytest.mark.parametrize("task", ALL_TASKS)
@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((16, 16, 3), np.uint8),
        ((37, 61, 3), np.uint8),
        ((61, 37), np.uint8),
        ((40, 50, 1), np.uint8),
        ((33, 47, 4), np.uint8),
        ((48, 64, 3), np.float32),
        ((20, 300, 3), np.uint8),
    ],
)
def test_edge_shapes(task, shape, dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    if dtype == np.float32:
        img = img.astype(np.float32) / 255.0
    for severity in (0.0, 1.0):
        out, params = degrade(task, img, np.random.default_rng(5), severity)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert np.isfinite(out.astype(np.float64)).all()
        if dtype == np.float32:
            assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.array_equal(apply(task, img, params), out)
    if shape[-1:] == (4,):
        assert np.array_equal(out[..., 3], img[..., 3]), "alpha passes through untouched"


@pytest.mark.parametrize("task", ALL_TASKS)
def test_output_stays_aligned(task, photo):
    """No crop or shift: the degraded image correlates best with the clean one at zero offset."""
    import cv2

    out, _ = degrade(task, photo, np.random.default_rng(2), 0.3)
    a = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    b = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
    assert abs(dx) < 1.0 and abs(dy) < 1.0, f"shift {(dx, dy)}"


def test_bad_arguments_are_clear(photo):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown task"):
        degrade("sharpen", photo, rng)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="severity"):
            degrade("noise", photo, rng, bad)
    with pytest.raises(ValueError, match="shape"):
        degrade("noise", np.zeros((4, 4, 5), np.uint8), rng)
    with pytest.raises(ValueError, match="recorded for task"):
        apply("noise", photo, {"task": "haze"})


def test_nine_fixed_prompts():
    assert list(TASKS) == ["blur", "compression", "moire", "lowlight", "noise", "flare", "reflection", "haze", "rain"]
    assert prompt("haze") == "Please dehaze the image"
    assert prompt("moire") == "Please remove the moiré patterns from the image"


def test_srgb_conversions_are_exact_and_keep_shape():
    from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear

    grid = np.linspace(0.0, 1.0, 10001)
    exact = np.where(grid <= 0.04045, grid / 12.92, ((grid + 0.055) / 1.055) ** 2.4)
    assert np.abs(srgb_to_linear(grid) - exact).max() < 1e-5
    assert np.abs(linear_to_srgb(srgb_to_linear(grid)) - grid).max() < 1e-5
    for shape in [(4, 5, 1), (1, 256, 1), (7,), (3, 3), (6, 5, 3)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        assert srgb_to_linear(x).shape == shape and linear_to_srgb(x).shape == shape


def test_allocator_is_tuned_for_image_buffers():
    from realrestorer.degrade.memory import reuse_freed_buffers

    assert reuse_freed_buffers() is True  # glibc here: freed image arrays stay in the heap for reuse
