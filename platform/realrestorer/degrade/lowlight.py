"""Low light: an underexposed, noisy raw capture developed by a camera pipeline without auto-exposure.

Following "Unprocessing Images for Learned Raw Denoising" (Brooks et al., CVPR 2019), the clean sRGB
image is turned back into plausible camera raw (inverse tone curve, sRGB → linear, inverse colour
correction, inverse white balance, Bayer mosaic). The exposure is then cut, shot and read noise are
added in raw, the raw is quantised to the sensor's bit depth, and the forward pipeline (demosaic, white
balance, colour correction, gamma, tone curve) develops it again. Nothing brightens the result back: the
output is darker and relatively noisier.

The Bayer helpers here are shared with the moire model, which images a screen through the same sensor.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear
from realrestorer.degrade.noise import lookup, standard_normal, tabulate

# XYZ → camera matrices of four cameras of the Darmstadt Noise Dataset, as used by Brooks et al.; a
# random convex mix of them gives a plausible unseen camera.
XYZ_TO_CAMERAS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
    ]
)
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)

EXPOSURE_MIN = 1.0 / 30.0  # at severity 1
EXPOSURE_MAX = 1.0 / 2.0  # at severity 0
# Shot-noise gain range (variance per unit raw signal); read noise follows the log-linear fit of Brooks et al.
LOG_SHOT_MIN = math.log(1e-4)
LOG_SHOT_MAX = math.log(2e-3)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return 3.0 * x**2 - 2.0 * x**3


def _inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * np.clip(y, 0.0, 1.0)) / 3.0)


# Both tone stages are pointwise, so each direction is one 16-bit table.
SRGB_TO_RAW_TONE = tabulate(lambda y: srgb_to_linear(_inverse_smoothstep(y.astype(np.float64)).astype(np.float32)))
RAW_TONE_TO_SRGB = tabulate(lambda x: _smoothstep(linear_to_srgb(x).astype(np.float64)))


def rgb_to_camera(ccm_weights: list[float]) -> np.ndarray:
    """Linear sRGB → camera RGB for a convex mix of the reference cameras; rows sum to 1 (white stays white)."""
    weights = np.asarray(ccm_weights, np.float64)
    if weights.shape != (len(XYZ_TO_CAMERAS),) or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError(f"ccm_weights must be {len(XYZ_TO_CAMERAS)} non-negative numbers, got {ccm_weights!r}")
    xyz_to_camera = np.tensordot(weights / weights.sum(), XYZ_TO_CAMERAS, axes=1)
    matrix = xyz_to_camera @ SRGB_TO_XYZ
    return matrix / matrix.sum(axis=1, keepdims=True)


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """Sample an H×W×3 image through an RGGB colour filter array: one value per pixel (H×W)."""
    raw = np.empty(rgb.shape[:2], np.float32)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


def bayer_demosaic(raw: np.ndarray, levels: int) -> np.ndarray:
    """Quantise an RGGB raw in [0, 1] to `levels` + 1 codes and demosaic it bilinearly; float32 H×W×3 in codes.

    OpenCV demosaics only integer data, and a sensor's ADC is integer anyway: quantising here *is* the
    bit-depth step. Rounding saturates, so negative noise clips to the black level.
    """
    codes = cv2.multiply(raw, float(levels), dtype=cv2.CV_16U)
    return cv2.cvtColor(codes, cv2.COLOR_BayerRGGB2RGB).astype(np.float32)


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict:
    """Draw the camera (gains, colour matrix, bit depth), the exposure cut and the noise levels."""
    # camera first and jitter drawn independently of severity, so a seed keeps its camera across severities
    ccm_weights = [float(w) for w in rng.uniform(1e-3, 1.0, len(XYZ_TO_CAMERAS))]
    rgb_gain = float(1.0 / np.clip(rng.normal(0.8, 0.1), 0.6, 1.0))
    red_gain = float(rng.uniform(1.9, 2.4))
    blue_gain = float(rng.uniform(1.5, 1.9))
    bits = int(rng.choice([10, 12]))
    exposure = EXPOSURE_MAX * (EXPOSURE_MIN / EXPOSURE_MAX) ** severity * rng.uniform(0.92, 1.08)
    log_shot = LOG_SHOT_MIN + severity * (LOG_SHOT_MAX - LOG_SHOT_MIN) + rng.uniform(-0.2, 0.2)
    # Brooks et al.: log read variance is linear in log shot gain with Gaussian scatter (std 0.26)
    log_read = 2.18 * log_shot + 1.20 + float(np.clip(rng.normal(0.0, 0.26), -0.52, 0.52))
    return {
        "exposure": float(exposure),
        "shot": float(math.exp(log_shot)),
        "read": float(math.exp(log_read)),
        "bits": bits,
        "rgb_gain": rgb_gain,
        "red_gain": red_gain,
        "blue_gain": blue_gain,
        "ccm_weights": ccm_weights,
        "seed": int(rng.integers(2**31)),
    }


def render(rgb: np.ndarray, params: dict, **context) -> np.ndarray:
    """Unprocess, underexpose, add raw noise, quantise and develop again (float32 H×W×3)."""
    rgb_to_cam = rgb_to_camera(params["ccm_weights"])
    wb = params["rgb_gain"] * np.array([params["red_gain"], 1.0, params["blue_gain"]])
    levels = 2 ** int(params["bits"]) - 1
    # Inverse white balance, inverse colour correction and the exposure cut are all linear: one matrix.
    to_raw = (params["exposure"] / wb)[:, None] * rgb_to_cam
    linear = lookup(SRGB_TO_RAW_TONE, rgb)
    raw = bayer_mosaic(cv2.transform(linear, to_raw.astype(np.float32)))
    raw = add_raw_noise(raw, params["shot"], params["read"], np.random.default_rng(params["seed"]))
    # Develop: demosaic, white balance, colour correction (and code → [0, 1] scaling) in one matrix.
    to_rgb = np.linalg.inv(rgb_to_cam) * (wb / levels)[None, :]
    developed = cv2.transform(bayer_demosaic(raw, levels), to_rgb.astype(np.float32))
    return lookup(RAW_TONE_TO_SRGB, developed)


def add_raw_noise(raw: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Shot plus read noise on a raw mosaic: variance = shot * signal + read (Gaussian approximation of Poisson)."""
    std = np.sqrt(np.maximum(raw, 0.0) * np.float32(shot) + np.float32(read))
    return raw + standard_normal(rng, raw.shape) * std
