"""Colour conversions shared by every degradation model.

Degradations work on float32 RGB in [0, 1]. Physical models (blur, lowlight,
flare, reflection, rain) mix light, so they convert to linear light first.
"""

from __future__ import annotations

import cv2
import numpy as np

# The exact IEC 61966-2-1 curve: cv2.pow for the power segment, then the short
# linear toe copied in where it applies. This is ~3x faster than np.power or a
# table lookup, and these conversions dominate every linear-light model's time.
_A = 0.055
_TOE_SRGB = np.float32(0.04045)
_TOE_LINEAR = np.float32(0.0031308)


LUMA_BT709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _as_image(x: np.ndarray) -> np.ndarray:
    # cv2 wants at least two dimensions.
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return x if x.ndim >= 2 else x.reshape(-1, 1)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (float32)."""
    shape = np.shape(x)
    x = _as_image(x)
    y = x * np.float32(1 / (1 + _A))
    y += np.float32(_A / (1 + _A))
    y = cv2.pow(y, 2.4).reshape(x.shape)  # cv2 drops a trailing size-1 axis
    np.copyto(y, x * np.float32(1 / 12.92), where=x <= _TOE_SRGB)
    return y.reshape(shape)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light to sRGB encoding; values above 1 saturate (float32)."""
    shape = np.shape(x)
    x = _as_image(x)
    y = cv2.pow(x, 1 / 2.4).reshape(x.shape)
    y *= np.float32(1 + _A)
    y -= np.float32(_A)
    np.copyto(y, x * np.float32(12.92), where=x <= _TOE_LINEAR)
    return y.reshape(shape)


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
    out = rgb
    if original.ndim == 2 or original.shape[2] == 1:
        out = luminance(out)
        if original.ndim == 3:
            out = out[:, :, None]
    if original.dtype in (np.uint8, np.uint16):
        top = np.float32(np.iinfo(original.dtype).max)
        out = out * top
        out += np.float32(0.5)
        out = np.clip(out, 0.0, top, out=out).astype(original.dtype)
    else:
        out = np.clip(out, 0.0, 1.0).astype(original.dtype, copy=False)
    if original.ndim == 3 and original.shape[2] == 4:
        out = np.concatenate([out, original[:, :, 3:4]], axis=2)
    return out
