"""Preset shapes and config validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from realrestorer.config import load_config
from realrestorer.model import ModelConfig, build_dit


def _num_params(preset: str) -> int:
    with torch.device("meta"):
        dit = build_dit(load_config(preset).model)
    assert next(dit.parameters()).is_meta
    return sum(p.numel() for p in dit.parameters())


@pytest.mark.parametrize("preset,low,high", [("tiny", 1e6, 3e6), ("small", 100e6, 300e6), ("flux-12b", 11.5e9, 12.5e9)])
def test_preset_dit_sizes(preset, low, high):
    assert low <= _num_params(preset) <= high


def test_flux_12b_has_the_flux_shape():
    cfg = load_config("flux-12b").model
    assert (cfg.dit.num_layers, cfg.dit.num_single_layers) == (19, 38)
    assert cfg.dit.num_attention_heads * cfg.dit.attention_head_dim == 3072
    assert cfg.codec == "vae" and cfg.text_encoder == "qwen2.5-vl" and cfg.pretrained_dit_path


def test_tiny_trains_from_scratch_on_pixels_at_64():
    cfg = load_config("tiny").model
    assert cfg.codec == "pixel" and cfg.pretrained_dit_path is None and cfg.resolution == 64
    assert cfg.num_steps == 28


@pytest.mark.parametrize(
    "tree,message",
    [
        ({"codec": "vae"}, "model.vae_path is required"),
        ({"text_encoder": "qwen2.5-vl"}, "model.text_encoder_path is required"),
        ({"pixel_patch": 4}, "in_channels is 48"),
        ({"resolution": 66}, "not a multiple of the token grid 4"),
        ({"dit": {"axes_dims_rope": [8, 8, 8]}}, "sums to 24"),
        ({"flow": "ddpm"}, "noise"),
        ({"resolutoin": 64}, "Extra inputs"),
    ],
)
def test_bad_model_config_fails_at_load_with_the_key(tree, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig.model_validate(tree)
