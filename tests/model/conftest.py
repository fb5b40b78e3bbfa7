"""Tiny real restorers and image pairs for the model tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from realrestorer.model import DiTConfig, ModelConfig


@pytest.fixture(autouse=True)
def _few_threads():
    # The test machine has two cores shared with other jobs.
    torch.set_num_threads(1)


def micro_config(**overrides) -> ModelConfig:
    """A ~0.1 M-parameter DiT on 32² pixels: small enough to overfit in seconds."""
    dit = DiTConfig(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=(4, 6, 6))
    return ModelConfig.model_validate({"dit": dit.model_dump(), "resolution": 32, **overrides})


def to_tensor(img_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img_uint8).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="session")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A 32² clean photo and a hazy, darkened version of it, each 1×3×32×32 in [0, 1]."""
    clean = to_tensor(cv2.resize(skdata.astronaut(), (32, 32), interpolation=cv2.INTER_AREA))[None]
    return clean, (clean * 0.5 + 0.2).clamp(0.0, 1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10.0 * torch.log10(1.0 / ((a - b) ** 2).mean()))
