"""Rain: depth-layered motion-blurred streaks, droplets and the veil of accumulated rain.

Each streak layer is a sparse random image of drop seeds convolved with a line
kernel (the drop's motion blur during the exposure) at the recorded angle and
length. Layers stand at different depths: near drops are long, wide, bright and
sparse; far ones short, faint and dense. Droplets are sparse seeds blurred by a
small elliptical kernel. Light adds: the rain is screened onto the scene in
linear light, then a veil (light scattered by the rain volume) lowers contrast.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear
from realrestorer.degrade.haze import tone_lookup

# Streak layer ranges, far → near: (length, width) as fractions of the image's short
# side, density in seeds per pixel, peak linear-light brightness.
_FAR = {"length": (0.015, 0.03), "width": (0.0010, 0.0020), "density": (0.0025, 0.0040), "brightness": (0.15, 0.25)}
_NEAR = {"length": (0.08, 0.16), "width": (0.0025, 0.0040), "density": (0.0003, 0.0005), "brightness": (0.40, 0.60)}

# Rain-light levels tabulated per render (see `haze.tone_lookup`).
_TABLE_ROWS = 65
# Largest short side streaks are drawn at (see `streaks`).
_STREAK_WORK_SIZE = 640


def _between(rng: np.random.Generator, key: str, z: float) -> float:
    """A value of `key` for a layer at nearness z ∈ [0, 1], drawn within the far↔near range."""
    lo = _FAR[key][0] + z * (_NEAR[key][0] - _FAR[key][0])
    hi = _FAR[key][1] + z * (_NEAR[key][1] - _FAR[key][1])
    return float(rng.uniform(lo, hi))


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    angle = float(rng.uniform(-30.0, 30.0))
    num_layers = int(rng.integers(2, 4))
    # Severity scales how much rain falls and how bright it catches the light.
    amount = 0.3 + 1.4 * severity
    glow = 0.6 + 0.6 * severity
    layers = []
    for i in range(num_layers):
        z = i / (num_layers - 1)
        layers.append(
            {
                "length": _between(rng, "length", z),
                "width": _between(rng, "width", z),
                "density": _between(rng, "density", z) * amount,
                "brightness": _between(rng, "brightness", z) * glow,
            }
        )
    return {
        "angle": angle,
        "layers": layers,
        "droplet_density": float(rng.uniform(2e-5, 6e-5) * amount),
        "droplet_size": float(rng.uniform(0.004, 0.010)),
        "droplet_brightness": float(rng.uniform(0.25, 0.45) * glow),
        "veil": float((0.02 + 0.08 * severity) * rng.uniform(0.9, 1.1)),
        # Grey-white, a little towards blue (skylight caught by the drops).
        "colour": [float(v) for v in rng.uniform(0.80, 0.90) + rng.uniform(0.0, 0.06) * np.array([0.0, 0.5, 1.0])],
        "seed": int(rng.integers(2**31)),
    }


def _sparse_seeds(rng: np.random.Generator, seeds: np.ndarray, density: float) -> np.ndarray:
    """Fill the float32 image `seeds` with zeros and round(density·area) seeds of random strength in [0.5, 1]."""
    seeds.fill(0.0)
    count = round(density * seeds.size)
    if count:
        seeds.flat[rng.integers(0, seeds.size, count)] = rng.uniform(0.5, 1.0, count).astype(np.float32)
    return seeds


def streaks(
    rng: np.random.Generator, height: int, width: int, angle: float, layers: list[dict[str, Any]]
) -> np.ndarray:
    """All depth layers of rain streaks, H×W float32 light, each layer's peak its brightness.

    The oriented line kernel is applied in a sheared frame: a vertical line (a
    1-D box filter, O(1) per pixel for any length) on each layer's seed canvas,
    then one horizontal shear of their sum tilts every streak to `angle`. For a
    uniformly random seed field this is the same as convolving with the tilted
    line kernel, at a cost independent of the streak length. The shear wraps
    around horizontally: the seed field is stationary, so a streak leaving one
    side enters the other just as a streak partly out of frame would look.

    Images whose short side exceeds `_STREAK_WORK_SIZE` get their streaks drawn
    at that size and upsampled: streaks are motion-blurred, mostly defocused
    drops, so the slight softening is physical, and it halves the cost at 1024².
    """
    scale = min(1.0, _STREAK_WORK_SIZE / min(height, width))
    full_size = (width, height)
    height, width = max(1, round(height * scale)), max(1, round(width * scale))
    short = min(height, width)
    theta = math.radians(angle)
    slope = math.tan(theta)
    lengths = [max(2, round(layer["length"] * short * math.cos(theta))) for layer in layers]
    margin = max(lengths) // 2 + 1
    # Three buffers reused by every layer: at 1024² fresh allocations cost as much as the filtering.
    total = np.zeros((height + 2 * margin, width), np.float32)
    canvas = np.empty_like(total)
    blurred = np.empty_like(total)
    for layer, length in zip(layers, lengths):  # two or three depth layers, each fully vectorised
        thickness = max(1, round(layer["width"] * short))
        _sparse_seeds(rng, canvas, layer["density"])
        # Two boxes of half the length make a triangular profile: streaks fade in and out at
        # their ends as a drop crosses the exposure. Sums, not means, then one rescale, so a
        # streak's peak is its seed's strength times the layer's brightness, whatever its length.
        half = max(1, (length + 1) // 2)
        cv2.boxFilter(canvas, -1, (thickness, half), dst=blurred, normalize=False, borderType=cv2.BORDER_CONSTANT)
        cv2.boxFilter(blurred, -1, (1, half), dst=canvas, normalize=False, borderType=cv2.BORDER_CONSTANT)
        brightness = np.float32(layer["brightness"])
        canvas *= brightness / np.float32(half)
        # Crossing streaks of one layer saturate at its brightness rather than stacking up.
        total += np.minimum(canvas, brightness, out=canvas)
    # dst(x, y) = src(x − slope·y, y + margin): moving down a streak moves right for angle > 0.
    shear = np.array([[1.0, -slope, 0.0], [0.0, 1.0, margin]], np.float32)
    light = cv2.warpAffine(
        total, shear, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP
    )
    if (width, height) != full_size:
        light = cv2.resize(light, full_size, interpolation=cv2.INTER_LINEAR)
    return light


def droplet_layer(rng: np.random.Generator, height: int, width: int, params: dict[str, Any]) -> np.ndarray:
    """Droplets and splashes: sparse seeds blurred into small soft ellipses (a separable Gaussian), peak ~1.

    The blobs are smooth, so they are made on a grid where σ is ~2 px and upsampled.
    """
    sigma = max(0.6, params["droplet_size"] * min(height, width))
    scale = min(1.0, 2.0 / sigma)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    seeds = _sparse_seeds(rng, np.empty((size[1], size[0]), np.float32), params["droplet_density"] / (scale * scale))
    sigma *= scale
    # Falling drops and splashes are taller than wide; the Gaussian's peak is renormalised to the seed value.
    blobs = cv2.GaussianBlur(seeds, (0, 0), sigmaX=sigma, sigmaY=1.6 * sigma)
    blobs *= np.float32(2.0 * math.pi * sigma * 1.6 * sigma)
    if size != (width, height):
        blobs = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_LINEAR)
    return blobs


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    height, width = rgb.shape[:2]
    rng = np.random.default_rng(params["seed"])
    rain = streaks(rng, height, width, params["angle"], params["layers"])
    rain += np.float32(params["droplet_brightness"]) * np.minimum(droplet_layer(rng, height, width, params), 1.0)
    np.clip(rain, 0.0, 1.0, out=rain)

    colour = np.asarray(params["colour"], np.float32)
    veil = np.float32(params["veil"])
    # The composite in linear light, tabulated over (sRGB level, rain light R): rows are
    # R = u², u uniform, packed where the sRGB curve bends hardest (faint rain on dark pixels).
    u = np.linspace(0.0, 1.0, _TABLE_ROWS, dtype=np.float32)
    scene = srgb_to_linear(np.linspace(0.0, 1.0, 256, dtype=np.float32))[None, :, None]
    light = (u * u)[:, None, None] * colour
    # Screen blend, L + R·(1 − L): rain light adds to the scene and saturates towards the rain
    # colour; then the veil (light scattered by the rain volume) replaces a fraction of the scene's.
    table = linear_to_srgb((scene + light * (1.0 - scene)) * (1.0 - veil) + veil * colour)
    row = np.sqrt(rain)
    row *= np.float32(_TABLE_ROWS - 1)
    return tone_lookup(rgb, row, table)
