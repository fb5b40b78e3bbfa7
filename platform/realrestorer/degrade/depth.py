"""Relative scene depth for haze: a weight-free prior and a TorchScript depth network.

A provider maps float32 RGB H×W×3 in [0, 1] to depth H×W in [0, 1] (0 near,
1 far). `provider(spec)` builds one from the config value `degrade.haze_depth`:
"prior" or the location of a TorchScript file.
"""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np


def normalise(depth: np.ndarray) -> np.ndarray:
    """Min-max scale a depth map to [0, 1] (float32); a constant map becomes all zeros."""
    depth = np.asarray(depth, dtype=np.float32)
    lo, hi = float(depth.min()), float(depth.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("depth map contains NaN or infinite values")
    if hi - lo < 1e-8:
        return np.zeros_like(depth)
    return (depth - np.float32(lo)) * np.float32(1.0 / (hi - lo))


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide): smooths `src` while following the edges of `guide`."""
    ksize = (2 * radius + 1, 2 * radius + 1)

    def mean(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, ksize, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide), mean(src)
    var_i = mean(guide * guide) - mean_i * mean_i
    cov_ip = mean(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


def _work_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


class PriorDepth:
    """Plausible depth from the image alone, no weights.

    Two cues, both standard in dehazing: the vertical prior (in most photos the
    top of the frame is farther away) and the dark channel (the per-pixel
    channel minimum, eroded over a patch; distant scene points and sky have a
    brighter dark channel). Their blend is smoothed with a guided filter so
    depth edges follow image edges. Computed at `work_size` on the long side
    (depth is smooth) and upsampled.
    """

    name = "prior"

    def __init__(self, work_size: int = 128, vertical_weight: float = 0.5) -> None:
        if work_size < 8:
            raise ValueError(f"work_size must be at least 8, got {work_size}")
        if not 0.0 <= vertical_weight <= 1.0:
            raise ValueError(f"vertical_weight must be in [0, 1], got {vertical_weight}")
        self.work_size = work_size
        self.vertical_weight = vertical_weight

    def depth(self, rgb: np.ndarray) -> np.ndarray:
        """Relative depth H×W in [0, 1] (0 near, 1 far) of float32 RGB `rgb`."""
        height, width = rgb.shape[:2]
        depth = self.coarse(rgb)
        if depth.shape != (height, width):
            depth = np.clip(cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        return depth

    __call__ = depth

    def coarse(self, rgb: np.ndarray) -> np.ndarray:
        """The depth at working resolution (`work_size` on the long side), before upsampling."""
        height, width = rgb.shape[:2]
        size = _work_size(height, width, self.work_size)
        # Striding first keeps the area resize from reading every pixel of a large image;
        # the aliasing this allows is far below what the smoothing below removes.
        stride = max(1, max(height, width) // (2 * self.work_size))
        small = rgb[::stride, ::stride] if stride > 1 else rgb
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA) if size != small.shape[1::-1] else small
        small = small.astype(np.float32, copy=False)
        h, w = small.shape[:2]

        patch = max(3, (max(h, w) // 20) | 1)
        dark = cv2.erode(small.min(axis=2), cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch)))
        lo, hi = np.percentile(dark, (5.0, 95.0))
        dark = np.clip((dark - np.float32(lo)) / np.float32(max(hi - lo, 1e-3)), 0.0, 1.0)

        vertical = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None] if h > 1 else np.full((1, 1), 0.5, np.float32)
        blend = np.float32(self.vertical_weight) * vertical + np.float32(1.0 - self.vertical_weight) * dark

        grey = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
        smooth = guided_filter(grey, blend.astype(np.float32), radius=max(1, max(h, w) // 16), eps=1e-2)
        return normalise(smooth)


class TorchScriptDepth:
    """A depth network saved as TorchScript, loaded once from a local path or fsspec URI.

    The module maps a 1×3×H×W float tensor (RGB in [0, 1], optionally resized to
    `input_size`×`input_size`) to 1×1×H×W or 1×H×W. Most monocular networks
    (MiDaS, Depth Anything) output inverse depth (disparity): with
    `inverse=True` the normalised output is flipped so that large means far.
    """

    name = "external"

    def __init__(self, path: str, inverse: bool = True, input_size: int | None = None, device: str = "cpu") -> None:
        import fsspec
        import torch

        fs, location = fsspec.core.url_to_fs(path)
        if not fs.exists(location) or fs.isdir(location):
            raise ValueError(f"depth model not found: {path} (set degrade.haze_depth to a TorchScript file or 'prior')")
        with fs.open(location, "rb") as f:
            self.model = torch.jit.load(io.BytesIO(f.read()), map_location=device)
        self.model.eval()
        self.path = path
        self.inverse = inverse
        self.input_size = input_size
        self.device = device

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        height, width = rgb.shape[:2]
        x = rgb.astype(np.float32, copy=False)
        if self.input_size is not None:
            x = cv2.resize(x, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
        x_bchw = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            out = self.model(x_bchw)
        out = out.detach().float().cpu().numpy()
        if out.ndim == 4 and out.shape[:2] == (1, 1):
            out = out[0, 0]
        elif out.ndim == 3 and out.shape[0] == 1:
            out = out[0]
        else:
            raise ValueError(f"depth model {self.path} returned shape {out.shape}; expected 1×1×H×W or 1×H×W")
        if out.shape != (height, width):
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        depth = normalise(out)
        return 1.0 - depth if self.inverse else depth


def provider(spec: str, **options: Any) -> PriorDepth | TorchScriptDepth:
    """The depth provider named by the config value `degrade.haze_depth`."""
    if spec == "prior":
        return PriorDepth(**options)
    return TorchScriptDepth(spec, **options)


def resolve(depth: Any, rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """Depth map for `rgb` and the provider's name, from a `depth=` context value.

    `depth` is an H×W array (normalised and used as is, named "external") or a
    provider: any object with `__call__(rgb) -> depth`, named by its `name`.
    """
    height, width = rgb.shape[:2]
    if isinstance(depth, np.ndarray):
        name, values = "external", depth
    elif callable(depth):
        name, values = str(getattr(depth, "name", type(depth).__name__)), np.asarray(depth(rgb))
    else:
        raise ValueError(f"depth= must be an H×W array or a provider with __call__(rgb), got {type(depth).__name__}")
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.shape != (height, width):
        raise ValueError(f"depth map has shape {values.shape}; the image is {height}×{width}")
    return normalise(values), name
