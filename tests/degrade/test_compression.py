"""Compression's signature: 8×8 blocking from JPEG, growing with severity; chroma loss from subsampling."""

from __future__ import annotations

import cv2
import numpy as np
from realrestorer.degrade import apply, degrade
from realrestorer.degrade.color import luminance

from tests.conftest import psnr


def blockiness(image: np.ndarray) -> float:
    """Mean |luma step| across 8-pixel block boundaries over the mean step inside blocks (≈1 for clean images)."""
    y = luminance(image.astype(np.float32))
    ratios = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        boundary = np.arange(steps.shape[1]) % 8 == 7  # the step from pixel 7 to 8 of each block
        ratios.append(steps[:, boundary].mean() / steps[:, ~boundary].mean())
    return float(np.mean(ratios))


def _seed_for(kind: str, photo: np.ndarray) -> int:
    # The kind is the first draw, so a seed picks the same kind at every severity.
    for seed in range(100):
        if degrade("compression", photo, np.random.default_rng(seed), 0.5)[1]["kind"] == kind:
            return seed
    raise AssertionError(f"no seed draws {kind}")


def test_jpeg_kinds_raise_blockiness_more_at_higher_severity(photos):
    for kind in ("jpeg", "generations"):
        for photo in photos:
            seed = _seed_for(kind, photo)
            clean = blockiness(photo)
            mild, strong = (
                blockiness(degrade("compression", photo, np.random.default_rng(seed), s)[0]) for s in (0.1, 0.9)
            )
            assert clean < mild < strong, f"{kind}: blockiness clean {clean:.3f}, 0.1 → {mild:.3f}, 0.9 → {strong:.3f}"
            assert strong > clean + 0.15, f"{kind}: strong compression barely blocky ({strong:.3f} vs {clean:.3f})"


def test_quality_falls_with_severity(photo):
    seed = _seed_for("jpeg", photo)
    q = [degrade("compression", photo, np.random.default_rng(seed), s)[1]["quality"] for s in (0.0, 0.5, 1.0)]
    assert q[0] > q[1] > q[2] and q[2] <= 15 and q[0] >= 50, q


def test_chroma_subsampling_is_applied(photo):
    """4:2:0 halves chroma resolution both ways, 4:2:2 horizontally only, 4:4:4 keeps it all."""
    ycc = cv2.cvtColor(photo, cv2.COLOR_RGB2YCrCb).astype(np.float64)

    def chroma_error(subsampling: str) -> float:
        params = {"kind": "jpeg", "quality": 60, "subsampling": subsampling}
        out = cv2.cvtColor(apply("compression", photo, params), cv2.COLOR_RGB2YCrCb).astype(np.float64)
        return float(np.mean((out[..., 1:] - ycc[..., 1:]) ** 2))

    e420, e422, e444 = (chroma_error(s) for s in ("420", "422", "444"))
    assert e420 > e422 > e444, (e420, e422, e444)


def test_generation_loss_accumulates(photos):
    """Saving again at other qualities loses more than one save at the lowest of them."""
    passes = [{"quality": q, "subsampling": "420"} for q in (45, 30, 55, 35)]
    for photo in photos:
        chain = psnr(apply("compression", photo, {"kind": "generations", "passes": passes}), photo)
        once = psnr(apply("compression", photo, {"kind": "jpeg", "quality": 30, "subsampling": "420"}), photo)
        first = psnr(apply("compression", photo, {"kind": "generations", "passes": passes[:1]}), photo)
        assert chain < once - 0.3 and chain < first - 1.0, (chain, once, first)


def test_resize_chain_softens_and_keeps_size(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def detail(image: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(image, cv2.CV_32F)).mean())

    for down, up in (("area", "cubic"), ("nearest", "nearest"), ("linear", "lanczos")):
        params = {"kind": "resize", "scale": 0.4, "down": down, "up": up, "quality": 90, "subsampling": "444"}
        out = apply("compression", photo, params)
        assert out.shape == photo.shape
        if up != "nearest":  # nearest upscaling trades blur for jaggies
            assert detail(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)) < 0.8 * detail(gray), (down, up)
        # Centre-aligned resampling: the round trip correlates best at zero offset.
        (dx, dy), _ = cv2.phaseCorrelate(gray, cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32))
        assert abs(dx) < 0.25 and abs(dy) < 0.25, (down, up, dx, dy)


def test_webp_is_a_real_codec(photo):
    low, high = (apply("compression", photo, {"kind": "webp", "quality": q}) for q in (5, 60))
    assert psnr(low, photo) < psnr(high, photo) < 45.0
    jpeg = apply("compression", photo, {"kind": "jpeg", "quality": 5, "subsampling": "420"})
    # WebP's in-loop deblocking leaves far less 8×8 blocking than JPEG at the same nominal quality.
    assert blockiness(low) < blockiness(jpeg)
