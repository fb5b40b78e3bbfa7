"""Sensor and film noise: Gaussian, Poisson-Gaussian, film grain, segment-aware and JPEG-compressed noise.

The kind is recorded in params["kind"]; the noise field itself comes from params["seed"]. Severity sets
the overall amount `sigma` (noise std in sRGB units, log-spaced from 4/255 to 38/255); each kind keeps
that scale so severity means the same thing across kinds.

This module also holds the two fast primitives the camera models (lowlight, moire) share: Gaussian
fields drawn by table inversion and 16-bit tone tables.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Callable

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, luminance, srgb_to_linear

KINDS = ("gaussian", "poisson_gaussian", "film_grain", "segment", "jpeg")

SIGMA_MIN = 4.0 / 255.0
SIGMA_MAX = 38.0 / 255.0

# --- shared primitives ------------------------------------------------------------------------------

_TABLE_SIZE = 65536
# Inverse-CDF sampling: 16 random bits index a table of normal quantiles. numpy's ziggurat
# standard_normal costs ~3x more per value, and 16-bit quantiles (tails cut at 4.3 sigma) are far
# finer than any image quantisation.
_NORMAL_QUANTILES = np.array(
    [NormalDist().inv_cdf((i + 0.5) / _TABLE_SIZE) for i in range(_TABLE_SIZE)], dtype=np.float32
)


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 field of unit normal samples (16-bit quantiles) drawn from `rng`."""
    return _NORMAL_QUANTILES[rng.integers(0, _TABLE_SIZE, size=shape, dtype=np.uint16)]


def tabulate(curve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A 65536-entry float32 table of a pointwise curve on [0, 1], for `lookup`."""
    return np.asarray(curve(np.linspace(0.0, 1.0, _TABLE_SIZE, dtype=np.float32)), dtype=np.float32)


def lookup(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply a tabulated curve: `x` is clipped to [0, 1] and rounded to 16 bits (one gather, no interpolation)."""
    # cv2 rounds and saturates to uint16 in one pass (numpy's clip + float→uint16 cast is ~10x slower);
    # a 2-D view keeps the scalar applying to every value rather than to the first channel only.
    index = cv2.multiply(np.ascontiguousarray(x).reshape(x.shape[0], -1), float(_TABLE_SIZE - 1), dtype=cv2.CV_16U)
    return np.take(table, index).reshape(x.shape)


TO_LINEAR = tabulate(srgb_to_linear)
TO_SRGB = tabulate(linear_to_srgb)


def _unit_grain(rng: np.random.Generator, shape: tuple[int, int], grain_px: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of `grain_px`, rescaled to unit std (spatially correlated)."""
    field = cv2.GaussianBlur(standard_normal(rng, shape), (0, 0), grain_px, borderType=cv2.BORDER_REFLECT)
    kernel = cv2.getGaussianKernel(2 * int(np.ceil(3 * grain_px)) + 1, grain_px).ravel()
    # std of filtered white noise is the kernel's L2 norm; for a separable kernel that is sum(k1d^2)
    return field * np.float32(1.0 / float(np.sum(kernel**2)))


# --- sample / render --------------------------------------------------------------------------------


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict:
    """Draw the noise kind and its parameters; amount rises with severity."""
    # kind and jitter first, so a given seed keeps its kind across severities (monotone strength)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    jitter = float(rng.uniform(0.9, 1.1))
    sigma = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** severity * jitter
    params: dict = {"kind": kind, "sigma": float(sigma), "seed": int(rng.integers(2**31))}
    if kind == "gaussian":
        params["gray"] = bool(rng.random() < 0.3)
    elif kind == "poisson_gaussian":
        # Noise std at mid-grey linear light (0.2) is ~sigma; read noise is a fraction of it.
        params["shot"] = float((0.9 * sigma) ** 2 / 0.2)
        params["read"] = float(sigma * rng.uniform(0.05, 0.3))
    elif kind == "film_grain":
        params["grain_px"] = float(rng.uniform(0.6, 1.6))
        params["chroma"] = float(rng.uniform(0.15, 0.5))
    elif kind == "segment":
        num_segments = int(rng.integers(3, 7))
        params["num_segments"] = num_segments
        params["levels"] = [float(v) for v in rng.uniform(0.25, 1.0, num_segments)]
    else:  # jpeg
        params["quality"] = int(rng.integers(60, 96))
        params["gray"] = bool(rng.random() < 0.3)
    return params


def render(rgb: np.ndarray, params: dict, **context) -> np.ndarray:
    """Add the recorded noise to `rgb` (float32 H×W×3 in [0, 1])."""
    kind = params["kind"]
    rng = np.random.default_rng(params["seed"])
    sigma = np.float32(params["sigma"])
    height, width = rgb.shape[:2]
    if kind == "gaussian":
        channels = 1 if params["gray"] else 3
        return rgb + standard_normal(rng, (height, width, channels)) * sigma
    if kind == "poisson_gaussian":
        return poisson_gaussian(rgb, params["shot"], params["read"], rng)
    if kind == "film_grain":
        return rgb + film_grain(rgb, params["sigma"], params["grain_px"], params["chroma"], rng)
    if kind == "segment":
        sigma_map = segment_sigma(rgb, params["levels"], params["sigma"])
        return rgb + standard_normal(rng, (height, width, 3)) * sigma_map[:, :, None]
    if kind == "jpeg":
        channels = 1 if params["gray"] else 3
        noisy = rgb + standard_normal(rng, (height, width, channels)) * sigma
        return jpeg_roundtrip(noisy, params["quality"])
    raise ValueError(f"unknown noise kind {kind!r}; choose one of: {', '.join(KINDS)}")


# --- the kinds --------------------------------------------------------------------------------------


def poisson_gaussian(rgb: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent noise in linear light: variance = shot * signal + read^2 (Gaussian approximation)."""
    linear = lookup(TO_LINEAR, rgb)
    std = np.sqrt(linear * np.float32(shot) + np.float32(read * read))
    noisy = linear + standard_normal(rng, linear.shape) * std
    return lookup(TO_SRGB, noisy)


def film_grain(rgb: np.ndarray, sigma: float, grain_px: float, chroma: float, rng: np.random.Generator) -> np.ndarray:
    """Correlated luma grain plus coarser, weaker chroma grain; returns the additive grain (H×W×3)."""
    height, width = rgb.shape[:2]
    luma = _unit_grain(rng, (height, width), grain_px)
    # Grain is most visible in the midtones, where density fluctuations change transmitted light most.
    y = luminance(rgb)
    luma *= np.float32(sigma) * (np.float32(0.4) + np.float32(2.4) * y * (np.float32(1.0) - y))
    # Colour-layer grain is coarser: draw it at half resolution and upsample.
    half = (max(1, (height + 1) // 2), max(1, (width + 1) // 2))
    cb = cv2.resize(_unit_grain(rng, half, grain_px), (width, height), interpolation=cv2.INTER_LINEAR)
    cr = cv2.resize(_unit_grain(rng, half, grain_px), (width, height), interpolation=cv2.INTER_LINEAR)
    amount = np.float32(sigma * chroma)
    # YCbCr → RGB columns: chroma noise shifts hue without changing luma
    grain = np.empty((height, width, 3), np.float32)
    grain[:, :, 0] = luma + amount * np.float32(1.402) * cr
    grain[:, :, 1] = luma - amount * (np.float32(0.344) * cb + np.float32(0.714) * cr)
    grain[:, :, 2] = luma + amount * np.float32(1.772) * cb
    return grain


_KMEANS_SIDE = 96
_KMEANS_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1e-3)


def segments(rgb: np.ndarray, num_segments: int) -> np.ndarray:
    """Deterministic k-means colour segmentation on a downscaled copy; labels (int32, small H×W).

    Initial labels are luminance quantiles, so label i starts as the i-th darkest group: no random
    initialisation, and a segment's label (and so its noise level) follows its brightness.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, _KMEANS_SIDE / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, small_size, interpolation=cv2.INTER_AREA)
    points = np.ascontiguousarray(small.reshape(-1, 3))
    num_segments = min(num_segments, len(points))
    rank = np.empty(len(points), np.int32)
    rank[np.argsort(luminance(points), kind="stable")] = np.arange(len(points), dtype=np.int32)
    labels = (rank * num_segments // len(points)).astype(np.int32).reshape(-1, 1)
    _, labels, _ = cv2.kmeans(points, num_segments, labels, _KMEANS_CRITERIA, 1, cv2.KMEANS_USE_INITIAL_LABELS)
    return labels.reshape(small_size[1], small_size[0])


def segment_sigma(rgb: np.ndarray, levels: list[float], sigma: float) -> np.ndarray:
    """Per-pixel noise std: one relative level per segment, area-weighted RMS normalised to `sigma`."""
    labels = segments(rgb, len(levels))
    level_map = np.asarray(levels, np.float32)[labels]
    # Normalising keeps the overall amount (and so PSNR) tied to severity whatever the segment sizes.
    level_map *= np.float32(sigma / np.sqrt(np.mean(level_map**2)))
    height, width = rgb.shape[:2]
    return cv2.resize(level_map, (width, height), interpolation=cv2.INTER_LINEAR)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as baseline JPEG at `quality` (what a camera or upload does after the noise)."""
    bgr8 = (np.clip(rgb[:, :, ::-1], 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", bgr8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
