"""Web chains: what happens to a photo on its way round the web.

Each image goes through a random chain of 2-4 operations (resizing for a
thumbnail and back, unsharp-mask sharpening with its haloes, mild softening,
sensor-like noise, re-encoding) that always ends in a lossy encode. The chain is
recorded as a list of {"op": ..., **settings} steps and `render` applies exactly
that list. Used as fast stage-2 input augmentation, so every step is a cheap
OpenCV call in sRGB, as web tools do it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.blur import convolve, gaussian_psf
from realrestorer.degrade.compression import (
    DOWNSCALERS,
    UPSCALERS,
    resize_roundtrip,
    roundtrip,
)

# Steps that may come before the final encode; a "jpeg" among them is an earlier save.
STEPS = ("resize", "sharpen", "blur", "noise", "jpeg")
OPS = STEPS + ("webp",)


def _encode_step(rng: np.random.Generator, severity: float, codec: str) -> dict[str, Any]:
    quality = int(np.clip(round(90.0 - 60.0 * severity + rng.uniform(-5.0, 5.0)), 5, 95))
    if codec == "webp":
        return {"op": "webp", "quality": quality}
    return {"op": "jpeg", "quality": quality, "subsampling": "420" if rng.uniform() < 0.75 else "444"}


def _step(name: str, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    if name == "resize":
        return {
            "op": "resize",
            "scale": float(rng.uniform(0.93, 1.07) / (1.15 + 1.1 * severity)),
            "down": DOWNSCALERS[int(rng.integers(len(DOWNSCALERS)))],
            "up": UPSCALERS[int(rng.integers(len(UPSCALERS)))],
        }
    if name == "sharpen":
        return {
            "op": "sharpen",
            "sigma": float(rng.uniform(0.8, 2.0)),
            "amount": float((0.4 + 1.2 * severity) * rng.uniform(0.9, 1.1)),
        }
    if name == "blur":
        sigma = (0.4 + 1.0 * severity) * float(rng.uniform(0.9, 1.1))
        return {
            "op": "blur",
            "sigma_x": sigma,
            "sigma_y": sigma * float(rng.uniform(0.6, 1.0)),
            "angle": float(rng.uniform(0.0, 180.0)),
        }
    if name == "noise":
        return {
            "op": "noise",
            "sigma": (1.0 + 5.0 * severity) / 255.0 * float(rng.uniform(0.9, 1.1)),
            "seed": int(rng.integers(2**31)),
        }
    return _encode_step(rng, severity, name)


def _apply(image: np.ndarray, step: dict[str, Any]) -> np.ndarray:
    op = step["op"]
    if op == "resize":
        return resize_roundtrip(image, step["scale"], step["down"], step["up"])
    if op == "sharpen":
        # Unsharp mask: adding back the detail layer overshoots at edges (haloes).
        soft = cv2.GaussianBlur(image, (0, 0), step["sigma"], borderType=cv2.BORDER_REFLECT_101)
        sharp = cv2.addWeighted(image, 1.0 + step["amount"], soft, -step["amount"], 0.0)
        return np.clip(sharp, 0.0, 1.0, out=sharp)
    if op == "blur":
        return convolve(image, gaussian_psf(step["sigma_x"], step["sigma_y"], step["angle"]))
    if op == "noise":
        # Luma-only: phone pipelines denoise chroma far harder than luma.
        h, w = image.shape[:2]
        grain = np.random.default_rng(step["seed"]).standard_normal((h, w), dtype=np.float32)
        noisy = cv2.scaleAdd(cv2.merge([grain, grain, grain]), step["sigma"], image)
        return np.clip(noisy, 0.0, 1.0, out=noisy)
    if op == "jpeg":
        return roundtrip(image, "jpeg", step["quality"], step["subsampling"])
    if op == "webp":
        return roundtrip(image, "webp", step["quality"])
    raise ValueError(f"unknown web op {op!r}; choose one of: {', '.join(OPS)}")


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    num_before = 1 + int(rng.integers(3))
    names = [STEPS[i] for i in rng.permutation(len(STEPS))[:num_before]]
    chain = [_step(name, rng, severity) for name in names]
    # Most of the web is JPEG; WebP is also far slower to encode, so it stays the minority.
    chain.append(_encode_step(rng, severity, "webp" if rng.uniform() < 0.1 else "jpeg"))
    return {"chain": chain}


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    chain = params["chain"]
    if not chain or chain[-1]["op"] not in ("jpeg", "webp"):
        raise ValueError("a web chain must end with a lossy encode ('jpeg' or 'webp')")
    image = rgb
    for step in chain:
        image = _apply(image, step)
    return image


__all__ = ["render", "sample"]
