"""Haze: the atmospheric scattering model I = J·t + A·(1 − t), t = exp(−β·d).

J is the clean scene in linear light, A the airlight (near-white, slightly
tinted), β the scattering coefficient (grows with severity) and d relative depth
in [0, 1] from a depth provider (`depth.py`; the weight-free prior by default,
or `depth=` in the render context). An optional procedural fog texture
modulates β in space for inhomogeneous haze.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear
from realrestorer.degrade.depth import PriorDepth, resolve

_PRIOR = PriorDepth()
# Fog texture resolution on the long side: fog is smooth, so it is built small and upsampled.
_FOG_WORK_SIZE = 128
# Transmission levels tabulated per render (see `tone_lookup`).
_TABLE_ROWS = 65


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    level = float(rng.uniform(0.80, 0.95))
    tint = rng.uniform(-0.03, 0.03, size=3)
    fog = bool(rng.random() < 0.5)
    return {
        # Far points (d = 1) keep exp(-beta) of their radiance: 78% at severity 0, 8% at severity 1.
        "beta": float((0.25 + 2.25 * severity) * rng.uniform(0.93, 1.07)),
        "airlight": [float(v) for v in np.clip(level + tint, 0.0, 1.0)],
        # Nearest depth offset: even the foreground sits some way into the medium.
        "near": float(rng.uniform(0.0, 0.1)),
        "depth": _PRIOR.name,
        "fog": fog,
        "fog_amount": float(rng.uniform(0.3, 0.7)) if fog else 0.0,
        "fog_cells": int(rng.integers(2, 5)),
        "seed": int(rng.integers(2**31)),
    }


def fog_texture(height: int, width: int, cells: int, seed: int, octaves: int = 4) -> np.ndarray:
    """Multi-octave value noise H×W in [−1, 1]: a sum of upsampled random grids, halving amplitude per octave."""
    rng = np.random.default_rng(seed)
    scale = min(1.0, _FOG_WORK_SIZE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    short = min(height, width)
    total = np.zeros((size[1], size[0]), np.float32)
    for octave in range(octaves):
        n = cells * 2**octave
        grid = rng.random(
            (max(2, round(n * height / short)) + 1, max(2, round(n * width / short)) + 1), dtype=np.float32
        )
        total += np.float32(0.5**octave) * cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)
    total -= total.mean()
    total /= max(float(np.abs(total).max()), 1e-6)
    if size != (width, height):
        total = cv2.resize(total, (width, height), interpolation=cv2.INTER_LINEAR)
    return total


def transmission(depth: np.ndarray, params: dict[str, Any], height: int, width: int) -> np.ndarray:
    """t = exp(−β·d) at H×W, with β modulated by the fog texture when enabled.

    `depth` may be coarser than the image (the prior's smooth depth): t is then
    computed at its resolution and upsampled, since t is as smooth as d.
    """
    near = np.float32(params["near"])
    thickness = np.float32(params["beta"]) * (near + (np.float32(1.0) - near) * depth)
    if params["fog"]:
        fog = fog_texture(*depth.shape, params["fog_cells"], params["seed"])
        thickness *= np.maximum(np.float32(1.0) + np.float32(params["fog_amount"]) * fog, 0.0)
    t = np.exp(-thickness)
    if t.shape != (height, width):
        t = cv2.resize(t, (width, height), interpolation=cv2.INTER_LINEAR)
    return t


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    """Haze `rgb` in linear light.

    The depth provider actually used is written to `params["depth"]` ("prior",
    "external" for a plain array, or the provider's name), so the record names
    what made the image; params recorded with another provider cannot be
    re-rendered without passing that provider again.
    """
    height, width = rgb.shape[:2]
    if context.get("depth") is None:
        if params["depth"] != _PRIOR.name:
            raise ValueError(f"these params were rendered with depth provider {params['depth']!r}; pass it as depth=")
        depth = _PRIOR.coarse(rgb)
    else:
        depth, params["depth"] = resolve(context["depth"], rgb)
    t = transmission(depth, params, height, width)
    # The model in linear light, tabulated over (sRGB level, t): rows are t = 1 − u², u uniform,
    # which packs rows where the sRGB curve bends hardest (t → 1 on dark pixels).
    u = np.linspace(0.0, 1.0, _TABLE_ROWS, dtype=np.float32)
    airlight = srgb_to_linear(np.asarray(params["airlight"], np.float32))
    scene = srgb_to_linear(np.linspace(0.0, 1.0, 256, dtype=np.float32))[None, :, None]
    table = linear_to_srgb((scene - airlight) * (1.0 - u * u)[:, None, None] + airlight)
    row = np.sqrt(np.maximum(np.float32(1.0) - t, 0.0))
    row *= np.float32(_TABLE_ROWS - 1)
    return tone_lookup(rgb, row, table)


def tone_lookup(rgb: np.ndarray, row: np.ndarray, table: np.ndarray) -> np.ndarray:
    """out[y, x, c] = table[row[y, x], 255·rgb[y, x, c], c], bilinear in both (float32 H×W×3).

    A per-pixel tone curve chosen by a field (haze's transmission, rain's light):
    `table` is K×256×3, one row per field level and one column per 8-bit sRGB level.
    One bilinear lookup per channel (cv2.remap) replaces converting the whole image
    to linear light and back, which is several times slower; 8-bit inputs land on
    table columns exactly and rows are spaced by the caller where the curve bends,
    so the result matches the direct formula to ~0.1 of an 8-bit level.
    """
    out = np.empty(rgb.shape, np.float32)
    # Per channel by strided views: cv2.split/merge cost more than the lookups themselves.
    for c in range(3):
        columns = rgb[:, :, c] * np.float32(255.0)
        out[:, :, c] = cv2.remap(
            np.ascontiguousarray(table[:, :, c]), columns, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    return out
