"""Teachers: restorers that make pseudo-references for real degraded images that have none.

A teacher is any callable H×W×3 uint8 RGB → H×W×3 uint8 RGB. `data.teacher`
names one: `nlmeans` (OpenCV non-local means, classical and weight-free), or
`module:function` for a user callable (for example one that wraps a restorer
trained on this platform).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import cv2
import numpy as np

Teacher = Callable[[np.ndarray], np.ndarray]


def nlmeans(rgb: np.ndarray) -> np.ndarray:
    """Non-local means denoising with strength from a robust noise estimate of the image itself."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Median absolute Laplacian response ≈ noise sigma (Immerkaer-style estimate, robust to edges).
    sigma = float(np.median(np.abs(cv2.Laplacian(gray, cv2.CV_32F)))) / 0.6745 / np.sqrt(20.0)
    strength = float(np.clip(sigma * 1.2, 3.0, 25.0))
    return cv2.fastNlMeansDenoisingColored(rgb, None, strength, strength, 5, 15)


def load_teacher(spec: str) -> Teacher:
    """The teacher callable named by `data.teacher`."""
    if spec == "nlmeans":
        return nlmeans
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"data.teacher must be 'nlmeans' or 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"data.teacher={spec!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise TypeError(f"data.teacher={spec!r} is not callable")
    return fn


def run_teacher(teacher: Teacher, degraded: np.ndarray) -> np.ndarray:
    """Apply a teacher and check its output is an image aligned with its input."""
    out = np.asarray(teacher(degraded))
    if out.shape != degraded.shape or out.dtype != np.uint8:
        raise ValueError(f"teacher returned {out.dtype} {out.shape}; expected uint8 {degraded.shape}")
    return out


__all__ = ["Teacher", "load_teacher", "nlmeans", "run_teacher"]
