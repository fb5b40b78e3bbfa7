"""The `model` section of the config tree: the DiT shape, codec, text encoder, flow and sampler."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The FLUX VAE's 16 latent channels, packed 2×2 into tokens.
VAE_TOKEN_CHANNELS = 64


class DiTConfig(BaseModel):
    """Keyword arguments of diffusers `FluxTransformer2DModel` (patch_size stays 1: tokens are packed 2×2 before)."""

    model_config = ConfigDict(extra="forbid")

    num_layers: int = Field(2, ge=0, description="Double-stream (MMDiT) blocks.")
    num_single_layers: int = Field(4, ge=0, description="Single-stream blocks.")
    attention_head_dim: int = Field(32, ge=4, description="Width of one attention head.")
    num_attention_heads: int = Field(4, ge=1, description="Heads; the model width is heads × head_dim.")
    in_channels: int = Field(48, ge=1, description="Channels of one token: 4 × the codec's latent channels (2×2 packing).")
    joint_attention_dim: int = Field(384, ge=1, description="Width of the text encoder's hidden states.")
    pooled_projection_dim: int = Field(384, ge=1, description="Width of the pooled text embedding.")
    guidance_embeds: bool = Field(False, description="Guidance-distilled variant (a guidance-scale embedding).")
    axes_dims_rope: tuple[int, int, int] = Field(
        (8, 12, 12), description="Rotary dims per position axis (image index, row, column); they sum to head_dim."
    )

    @model_validator(mode="after")
    def _rope_fits_head(self) -> "DiTConfig":
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(
                f"model.dit.axes_dims_rope {list(self.axes_dims_rope)} sums to {sum(self.axes_dims_rope)}, "
                f"not attention_head_dim {self.attention_head_dim}"
            )
        if any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(f"model.dit.axes_dims_rope {list(self.axes_dims_rope)} must hold even numbers")
        return self

    def kwargs(self) -> dict:
        """Constructor arguments for `FluxTransformer2DModel`."""
        return {**self.model_dump(), "axes_dims_rope": list(self.axes_dims_rope), "patch_size": 1}


class ModelConfig(BaseModel):
    """The restorer: a FLUX-shaped DiT conditioned on the degraded image's tokens and a prompt."""

    model_config = ConfigDict(extra="forbid")

    dit: DiTConfig = Field(default_factory=DiTConfig, description="Shape of the DiT.")
    pretrained_dit_path: str | None = Field(
        None, description="Local dir or s3:// URI of a diffusers FluxTransformer2DModel to start from; None = random init."
    )
    codec: Literal["pixel", "vae"] = Field("pixel", description="'pixel' (weight-free pixel-unshuffle) or 'vae' (AutoencoderKL).")
    pixel_patch: int = Field(2, ge=1, description="Pixel codec: side of the pixel block folded into one latent cell.")
    vae_path: str | None = Field(None, description="Local dir or s3:// URI of a diffusers AutoencoderKL (codec 'vae').")
    text_encoder: Literal["minilm", "qwen2.5-vl"] = Field(
        "minilm", description="'minilm' (a BERT sentence encoder, text only) or 'qwen2.5-vl' (sees image and prompt)."
    )
    text_encoder_path: str | None = Field(
        None, description="Local dir or s3:// URI of the text encoder; None with 'minilm' = the bundled all-MiniLM-L6-v2."
    )
    max_text_tokens: int = Field(32, ge=2, description="Prompt tokens given to the DiT (padded / truncated).")
    resolution: int = Field(64, ge=8, description="Side of the square training crop; inputs are resized to this area.")
    flow: Literal["noise", "bridge"] = Field(
        "bridge", description="'noise': flow from Gaussian noise; 'bridge': flow from the degraded latent (InDI-style)."
    )
    bridge_noise: float = Field(0.0, ge=0.0, description="Bridge flow: std of Gaussian noise added to the degraded source.")
    shift: float = Field(1.0, gt=0.0, description="Timestep shift: sigma' = shift·sigma / (1 + (shift-1)·sigma).")
    logit_mean: float = Field(0.0, description="Mean of the logit-normal sigma distribution in training.")
    logit_std: float = Field(1.0, gt=0.0, description="Std of the logit-normal sigma distribution in training.")
    loss_weighting: Literal["none", "relative"] = Field(
        "none",
        description="'relative': each sample's loss is divided by its target's mean square (the identity's loss on "
        "the bridge), so a mild degradation counts as much as a severe one, as in mean PSNR; 'none': plain MSE.",
    )
    loss_floor: float = Field(
        1e-3, gt=0.0, description="'relative' weighting: added to the target's mean square, so near-identical pairs stay bounded."
    )
    prompt_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of training samples given the empty prompt, so guidance has an unconditional branch."
    )
    num_steps: int = Field(28, ge=1, description="Euler steps of the sampler.")
    guidance: float = Field(1.0, ge=0.0, description="Classifier-free guidance scale against the empty prompt; 1 = off.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Dtype of the restorer's weights.")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if self.codec == "vae" and not self.vae_path:
            raise ValueError("model.vae_path is required when model.codec is 'vae'")
        if self.text_encoder == "qwen2.5-vl" and not self.text_encoder_path:
            raise ValueError("model.text_encoder_path is required when model.text_encoder is 'qwen2.5-vl'")
        expected = 4 * 3 * self.pixel_patch**2 if self.codec == "pixel" else VAE_TOKEN_CHANNELS
        if self.dit.in_channels != expected:
            raise ValueError(
                f"model.dit.in_channels is {self.dit.in_channels} but codec {self.codec!r} gives {expected}-channel tokens"
            )
        if self.resolution % self.grid:
            raise ValueError(f"model.resolution {self.resolution} is not a multiple of the token grid {self.grid}")
        return self

    @property
    def grid(self) -> int:
        """Pixels per token side: the codec's downscale times the 2×2 packing."""
        return 2 * (self.pixel_patch if self.codec == "pixel" else 8)
