"""Web chains: the recorded chain is exactly what is applied, and each step leaves its own trace."""

from __future__ import annotations

import numpy as np
import pytest
from realrestorer.degrade import apply, degrade
from realrestorer.degrade.web import OPS

from tests.conftest import psnr
from tests.degrade.test_compression import blockiness


def _high_frequency_energy(image: np.ndarray) -> float:
    y = image.astype(np.float32).mean(axis=2)
    power = np.abs(np.fft.fft2(y - y.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    return float(power[np.hypot(fx, fy) > 0.25].sum())


def test_chains_have_two_to_four_steps_and_end_encoded(photo):
    lengths, ops = set(), set()
    for seed in range(40):
        _, params = degrade("web", photo, np.random.default_rng(seed), 0.5)
        chain = params["chain"]
        lengths.add(len(chain))
        ops.update(step["op"] for step in chain)
        assert chain[-1]["op"] in ("jpeg", "webp")
        assert all(step["op"] in OPS for step in chain)
    assert lengths == {2, 3, 4}
    assert ops == set(OPS), f"ops never drawn: {set(OPS) - ops}"


def test_rendering_follows_the_recorded_chain(photo):
    encode = {"op": "jpeg", "quality": 92, "subsampling": "444"}
    resize = {"op": "resize", "scale": 0.4, "down": "area", "up": "linear"}
    sharpen = {"op": "sharpen", "sigma": 1.5, "amount": 1.2}
    only_encode = apply("web", photo, {"chain": [encode]})
    resized = apply("web", photo, {"chain": [resize, encode]})
    sharpened = apply("web", photo, {"chain": [sharpen, encode]})
    # Down and up again loses the top octave; unsharp masking boosts it.
    assert _high_frequency_energy(resized) < 0.3 * _high_frequency_energy(only_encode)
    assert _high_frequency_energy(sharpened) > 1.5 * _high_frequency_energy(only_encode)

    # Haloes: sharpening overshoots edges, pushing more pixels to the clipping points.
    def clipped(image: np.ndarray) -> int:
        return int(((image == 0) | (image == 255)).sum())

    assert clipped(sharpened) > clipped(only_encode) + 100


def test_final_jpeg_leaves_blocking(photo):
    chain = [{"op": "noise", "sigma": 2.0 / 255.0, "seed": 1}, {"op": "jpeg", "quality": 15, "subsampling": "420"}]
    assert blockiness(apply("web", photo, {"chain": chain})) > blockiness(photo) + 0.15


def test_noise_step_follows_its_seed(photo):
    def chain(seed: int) -> list[dict]:
        return [
            {"op": "noise", "sigma": 4.0 / 255.0, "seed": seed},
            {"op": "jpeg", "quality": 90, "subsampling": "444"},
        ]

    a, b, c = (apply("web", photo, {"chain": chain(s)}) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert psnr(a, photo) < 45.0


def test_chain_without_a_final_encode_is_refused(photo):
    with pytest.raises(ValueError, match="must end with a lossy encode"):
        apply("web", photo, {"chain": [{"op": "blur", "sigma_x": 1.0, "sigma_y": 1.0, "angle": 0.0}]})
    with pytest.raises(ValueError, match="unknown web op"):
        apply("web", photo, {"chain": [{"op": "posterize"}, {"op": "jpeg", "quality": 50, "subsampling": "420"}]})
