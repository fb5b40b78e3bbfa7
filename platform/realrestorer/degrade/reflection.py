"""Reflection: a photo taken through glass that also reflects another scene.

In linear light the sensor sees I = α·T + β·R: the transmitted scene T dimmed by
the glass (α < 1) plus the reflected scene R weighted by the reflectance β. The
camera focuses on T, so R is either defocused (a Gaussian blur) or, for thick
glass, doubled by its two surfaces (R + γ·R shifted), and often vignetted.

The reflected scene is a second image the caller passes as `reflection=` (the
"external" layer); without one it is made from the params: a flipped,
recoloured crop of the scene itself ("scene") or smooth gradients with blurred
bright shapes, like lamps and windows ("procedural"). T is never moved, so the
output stays aligned with the input.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear, to_rgb_float

# The engine passes these context keys to `sample` as well as to `render`.
SAMPLE_CONTEXT = ("reflection",)

_LAYERS = ("scene", "procedural", "external")


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float, reflection: np.ndarray | None = None) -> dict[str, Any]:
    h, w = rgb.shape[:2]
    side = max(h, w)
    if reflection is not None:
        layer = "external"
    else:
        layer = "scene" if rng.random() < 0.5 else "procedural"
    beta = (0.1 + 0.4 * severity) * rng.uniform(0.92, 1.08)
    # Glass absorbs and reflects what it does not pass: α falls as β rises.
    alpha = 1.0 - beta * rng.uniform(0.3, 0.6)
    params: dict[str, Any] = {"layer": layer, "alpha": float(alpha), "beta": float(beta)}
    if layer == "scene":
        crop_w = max(1, round(w * rng.uniform(0.4, 0.8)))
        crop_h = max(1, round(h * rng.uniform(0.4, 0.8)))
        params["crop"] = [int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1)), crop_w, crop_h]
        params["gain"] = [float(g) for g in rng.uniform(0.6, 1.3, size=3)]
    elif layer == "procedural":
        params["seed"] = int(rng.integers(2**31))
    if rng.random() < 0.6:
        params["mode"] = "defocus"
        params["blur_sigma"] = float(max(0.5, side * rng.uniform(0.004, 0.02)))
    else:
        params["mode"] = "ghost"
        shift = max(1.0, side * rng.uniform(0.01, 0.04))
        angle = rng.uniform(0.0, 2.0 * np.pi)
        params["ghost_offset"] = [int(round(shift * np.cos(angle))), int(round(shift * np.sin(angle)))]
        params["ghost_gamma"] = float(rng.uniform(0.3, 0.8))
    params["vignette"] = float(rng.uniform(0.0, 0.7))
    params["vignette_center"] = [float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))]
    return params


def _procedural_layer(seed: int, h: int, w: int) -> np.ndarray:
    """A dim room in linear light: smooth colour gradients plus a few blurred bright shapes."""
    rng = np.random.default_rng(seed)
    grid = 64
    background = cv2.resize(rng.uniform(0.02, 0.35, size=(3, 3, 3)).astype(np.float32), (grid, grid), interpolation=cv2.INTER_CUBIC)
    num_shapes = int(rng.integers(3, 9))
    centres = rng.uniform(0.0, grid, size=(num_shapes, 2, 1, 1)).astype(np.float32)
    sizes = rng.uniform(1.5, 8.0, size=(num_shapes, 2, 1, 1)).astype(np.float32)
    colours = rng.uniform(0.3, 1.0, size=(num_shapes, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:grid, 0:grid].astype(np.float32)
    blobs = np.exp(-0.5 * (((xx - centres[:, 0]) / sizes[:, 0]) ** 2 + ((yy - centres[:, 1]) / sizes[:, 1]) ** 2))
    small = np.clip(background + np.tensordot(blobs, colours, axes=(0, 0)), 0.0, 1.0).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)


def _resize_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    shrinking = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR).reshape(h, w, 3)


def reflection_layer(transmission: np.ndarray, params: dict[str, Any], reflection: np.ndarray | None) -> np.ndarray:
    """The unprocessed reflected scene R in linear light, H×W×3 (`transmission` is T in linear light)."""
    h, w = transmission.shape[:2]
    layer = params["layer"]
    if layer not in _LAYERS:
        raise ValueError(f"unknown reflection layer {layer!r}; expected one of {', '.join(_LAYERS)}")
    if layer == "external":
        if reflection is None:
            raise ValueError("these params use an external reflection layer: pass the reflection image as reflection=")
        return srgb_to_linear(_resize_to(to_rgb_float(reflection), h, w))
    if reflection is not None:
        raise ValueError(f"these params make a {layer!r} reflection layer; drop reflection= or sample with it")
    if layer == "procedural":
        return _procedural_layer(params["seed"], h, w)
    x0, y0, crop_w, crop_h = params["crop"]
    # A mirror image: what faces the glass is seen flipped left to right.
    crop = cv2.flip(transmission[y0 : y0 + crop_h, x0 : x0 + crop_w], 1)
    return _resize_to(crop, h, w) * np.asarray(params["gain"], np.float32)


def _defocus(layer: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide blurs run on a smaller image, which a blurred layer loses nothing to."""
    h, w = layer.shape[:2]
    factor = int(sigma // 3.0)
    if factor < 2 or min(h, w) < 4 * factor:
        return cv2.GaussianBlur(layer, (0, 0), sigma)
    small_w, small_h = -(-w // factor), -(-h // factor)
    small = cv2.resize(layer, (small_w, small_h), interpolation=cv2.INTER_AREA)
    # Area averaging and bilinear upsampling blur too (variances ≈ f²/12 and f²/6): take them off.
    rest = np.sqrt(max(sigma * sigma - factor * factor / 4.0, 0.25 * factor * factor)) / factor
    small = cv2.GaussianBlur(small, (0, 0), rest)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)


def _shifted(layer: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`layer` moved by (dx, dy) pixels, edges repeated."""
    h, w = layer.shape[:2]
    padded = cv2.copyMakeBorder(layer, max(dy, 0), max(-dy, 0), max(dx, 0), max(-dx, 0), cv2.BORDER_REPLICATE)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded.reshape(padded.shape[0], padded.shape[1], 3)[top : top + h, left : left + w]


def _vignette(h: int, w: int, strength: float, center: list[float]) -> np.ndarray:
    """1 at `center`, falling quadratically to 1 - strength half a diagonal away."""
    radius2 = np.float32(0.25 * (h * h + w * w))
    dx2 = (np.arange(w, dtype=np.float32) - np.float32(center[0])) ** 2 / radius2
    dy2 = (np.arange(h, dtype=np.float32) - np.float32(center[1])) ** 2 / radius2
    return 1.0 - np.float32(strength) * np.minimum(dy2[:, None] + dx2[None, :], 1.0)


def process_layer(layer: np.ndarray, params: dict[str, Any], weight: float = 1.0) -> np.ndarray:
    """What the camera records of the reflected scene: defocused or doubled, vignetted, times `weight`."""
    h, w = layer.shape[:2]
    if params["mode"] == "defocus":
        layer = _defocus(layer, params["blur_sigma"])
    elif params["mode"] == "ghost":
        dx, dy = params["ghost_offset"]
        layer = cv2.scaleAdd(_shifted(layer, dx, dy), params["ghost_gamma"], layer)
    else:
        raise ValueError(f"unknown reflection mode {params['mode']!r}; expected 'defocus' or 'ghost'")
    return layer * (np.float32(weight) * _vignette(h, w, params["vignette"], params["vignette_center"]))[..., None]


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    transmission = srgb_to_linear(rgb)
    reflected = process_layer(reflection_layer(transmission, params, context.get("reflection")), params, params["beta"])
    return linear_to_srgb(cv2.addWeighted(transmission, params["alpha"], reflected, 1.0, 0.0))
