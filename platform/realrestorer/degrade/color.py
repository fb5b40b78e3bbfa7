"""Colour conversions shared by every degradation model.

Degradations work on float32 RGB in [0, 1]. Physical models (blur, lowlight,
flare, reflection, rain) mix light, so they convert to linear light first.
"""

from __future__ import annotations

import numpy as np

# sRGB transfer function as a 4096-entry table: exact enough for 8-bit data and
# ~10x faster than np.power on every pixel.
_LUT_SIZE = 4096
_GRID = np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float64)
_TO_LINEAR = np.where(_GRID <= 0.04045, _GRID / 12.92, ((_GRID + 0.055) / 1.055) ** 2.4).astype(np.float32)
_TO_SRGB = np.where(_GRID <= 0.0031308, _GRID * 12.92, 1.055 * _GRID ** (1 / 2.4) - 0.055).astype(np.float32)

LUMA_BT709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _lookup(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    # Linear interpolation in the table; inputs are clipped to [0, 1].
    pos = np.clip(x, 0.0, 1.0) * np.float32(_LUT_SIZE - 1)
    lo = pos.astype(np.int32)
    np.minimum(lo, _LUT_SIZE - 2, out=lo)
    frac = pos - lo.astype(np.float32)  # int32 - float32 would promote everything to float64
    return table[lo] + frac * (table[lo + 1] - table[lo])


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (float32)."""
    return _lookup(_TO_LINEAR, x.astype(np.float32, copy=False))


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light to sRGB encoding; values above 1 saturate (float32)."""
    return _lookup(_TO_SRGB, x.astype(np.float32, copy=False))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma of an H×W×3 float image."""
    return rgb @ LUMA_BT709


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Any supported input (H×W, H×W×1, H×W×3, H×W×4; uint8, uint16 or float) as float32 RGB in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {image.shape}")
    if image.dtype == np.uint8:
        rgb = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        rgb = image.astype(np.float32) / 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        rgb = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    elif rgb.shape[2] == 4:
        rgb = rgb[:, :, :3]
    return np.ascontiguousarray(rgb)


def like_input(rgb: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Return float RGB `rgb` in the layout and dtype of `original`.

    Grayscale inputs come back grayscale (luma), RGBA keeps its alpha untouched,
    integer inputs are rounded back to their integer type.
    """
    original = np.asarray(original)
    out = np.clip(rgb, 0.0, 1.0)
    if original.ndim == 2 or original.shape[2] == 1:
        out = luminance(out)
        if original.ndim == 3:
            out = out[:, :, None]
    if original.dtype == np.uint8:
        out = (out * 255.0 + 0.5).astype(np.uint8)
    elif original.dtype == np.uint16:
        out = (out * 65535.0 + 0.5).astype(np.uint16)
    else:
        out = out.astype(original.dtype, copy=False)
    if original.ndim == 3 and original.shape[2] == 4:
        out = np.concatenate([out, original[:, :, 3:4]], axis=2)
    return out
