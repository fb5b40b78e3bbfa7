"""Prompt encoders: the bundled MiniLM, and Qwen2.5-VL from a local directory (tiny random weights, real formats)."""

from __future__ import annotations

import pytest
import torch

from realrestorer.model import ModelConfig
from realrestorer.model.text import SentenceEncoder, _fit_tokens, build_text_encoder


def test_bundled_minilm_embeds_prompts_offline_and_caches_them(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = build_text_encoder(ModelConfig())
    assert isinstance(text, SentenceEncoder) and text.hidden_size == 384
    hidden, pooled = text.encode(["Please dehaze the image", "Please remove noise from the image.", ""])
    assert hidden.shape == (3, 32, 384) and pooled.shape == (3, 384)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    # Real pretrained weights: two restoration prompts are closer to each other than to the empty prompt.
    assert float(pooled[0] @ pooled[1]) > float(pooled[0] @ pooled[2])
    # Padding positions are zero, prompt positions are not.
    n = len(text.tokenizer("Please dehaze the image")["input_ids"])
    assert 4 < n < 32
    assert float(hidden[0, n:].abs().sum()) == 0.0 and bool((hidden[0, :n].abs().sum(-1) > 0).all())
    assert set(text._cache) == {"Please dehaze the image", "Please remove noise from the image.", ""}
    again, _ = text.encode(["Please dehaze the image"])
    assert torch.equal(again[0], hidden[0])


def test_fit_tokens_moves_left_padded_tokens_to_the_front():
    hidden = torch.arange(8.0).view(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    out = _fit_tokens(hidden, mask, 3)
    assert out[..., 0].tolist() == [[2.0, 3.0, 0.0], [4.0, 5.0, 6.0]]


def test_qwen_vl_reads_image_and_prompt_from_a_local_directory(qwen_dir):
    short = build_text_encoder(ModelConfig(text_encoder="qwen2.5-vl", text_encoder_path=str(qwen_dir), max_text_tokens=64))
    with pytest.raises(ValueError, match="max_text_tokens is 64"):
        short.encode(["please remove the noise"], torch.rand(1, 3, 64, 48))
    cfg = ModelConfig(text_encoder="qwen2.5-vl", text_encoder_path=str(qwen_dir), max_text_tokens=300)
    text = build_text_encoder(cfg)
    assert text.needs_image and text.hidden_size == 32
    img = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    prompts = ["please remove the noise", "please dehaze the image ."]
    hidden, pooled = text.encode(prompts, img)
    assert hidden.shape == (2, 300, 32) and pooled.shape == (2, 32)
    flipped, _ = text.encode(prompts, torch.flip(img, dims=[-1]))
    assert not torch.allclose(hidden, flipped)  # the image is seen
    other, _ = text.encode(["please remove the image", prompts[1]], img)
    assert not torch.allclose(hidden[0], other[0]) and torch.allclose(hidden[1], other[1], atol=1e-5)
    text_only, _ = text.encode(prompts)
    assert set(text._cache) == set(prompts) and not torch.allclose(text_only, hidden)


def test_qwen_vl_loads_straight_into_the_model_dtype(qwen_dir):
    """A bf16 model config loads the VLM in bf16 (half the host memory of fp32 then a cast), and it still reads images."""
    cfg = ModelConfig(text_encoder="qwen2.5-vl", text_encoder_path=str(qwen_dir), max_text_tokens=300, dtype="bfloat16")
    text = build_text_encoder(cfg)
    assert {p.dtype for p in text.parameters()} == {torch.bfloat16}
    hidden, pooled = text.encode(["please remove the noise"], torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0)))
    assert hidden.dtype == torch.float32 and torch.isfinite(hidden).all() and pooled.shape == (1, 32)
