"""Image ↔ latent codecs: the weight-free `pixel` codec and the FLUX `AutoencoderKL`.

Both map B×3×H×W images in [0, 1] to B×C×(H/f)×(W/f) latents of roughly unit scale and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from realrestorer.model.weights import resolve_dir


class PixelCodec(nn.Module):
    """Folds each p×p pixel block into 3·p² channels; [0, 1] maps to [-1, 1] like a VAE's input range."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch
        self.channels = 3 * patch * patch
        self.downscale = patch

    def encode(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images_B3HW * 2.0 - 1.0, self.patch)

    def decode(self, latents_BCHW: torch.Tensor) -> torch.Tensor:
        return ((F.pixel_shuffle(latents_BCHW, self.patch) + 1.0) * 0.5).clamp(0.0, 1.0)


class VAECodec(nn.Module):
    """A diffusers AutoencoderKL; latents are (z - shift) · scale with the factors from its config."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scale = float(vae.config.scaling_factor)
        # The FLUX VAE carries shift_factor 0.1159; SD-style VAEs have none.
        self.shift = float(vae.config.shift_factor or 0.0)

    def encode(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        x = images_B3HW.to(self.vae.dtype) * 2.0 - 1.0
        # The distribution's mode: a deterministic latent for both the target and the reference.
        z = self.vae.encode(x).latent_dist.mode()
        return ((z - self.shift) * self.scale).float()

    def decode(self, latents_BCHW: torch.Tensor) -> torch.Tensor:
        z = latents_BCHW.to(self.vae.dtype) / self.scale + self.shift
        return ((self.vae.decode(z).sample.float() + 1.0) * 0.5).clamp(0.0, 1.0)


# The files a diffusers AutoencoderKL folder needs: each group's alternatives, one of which must be there.
VAE_FILES = (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))


def load_vae(uri: str, key: str = "model.vae_path"):
    """An AutoencoderKL from a diffusers directory (local or s3://)."""
    from diffusers import AutoencoderKL

    local = resolve_dir(uri, key, VAE_FILES)
    return AutoencoderKL.from_pretrained(str(local), local_files_only=True)


def build_codec(model_cfg) -> nn.Module:
    """The frozen codec named by `model.codec`."""
    codec = PixelCodec(model_cfg.pixel_patch) if model_cfg.codec == "pixel" else VAECodec(load_vae(model_cfg.vae_path))
    codec.requires_grad_(False)
    return codec.eval()
