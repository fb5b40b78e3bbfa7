"""Shared fixtures: real photos (scikit-image ships them) and image measures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images of the same shape (uint8 or float in [0, 1])."""
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return 100.0 if mse == 0 else 10.0 * np.log10(1.0 / mse)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 256×256 uint8 RGB photo (astronaut)."""
    return cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Three different 128×128 uint8 RGB photos."""
    return [cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA) for img in (skdata.astronaut(), skdata.coffee(), skdata.chelsea())]
