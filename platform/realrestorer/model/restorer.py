"""The restorer: codec + frozen text encoder + trainable DiT, its loss, its sampler, and its checkpoint format."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from realrestorer.model import flow
from realrestorer.model.codecs import build_codec
from realrestorer.model.config import ModelConfig
from realrestorer.model.sampler import sample
from realrestorer.model.sizing import buckets, fit_size, resize
from realrestorer.model.text import build_text_encoder
from realrestorer.model.transformer import pack, predict_velocity, unpack
from realrestorer.model.weights import check_files, resolve_dir

CARD_VERSION = 1
CARD_NAME = "model_card.json"


# A diffusers FluxTransformer2DModel folder: config and weights (one file or an index of shards).
DIT_FILES = (
    ("config.json",),
    ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin"),
)


def build_dit(model_cfg: ModelConfig):
    """A randomly initialised FluxTransformer2DModel of the configured shape (works under a meta-device context)."""
    from diffusers import FluxTransformer2DModel

    dit = FluxTransformer2DModel(**model_cfg.dit.kwargs())
    # A zero output layer starts the bridge flow at the identity (velocity 0 keeps the degraded input).
    nn.init.zeros_(dit.proj_out.weight)
    nn.init.zeros_(dit.proj_out.bias)
    return dit


def load_dit(uri: str, model_cfg: ModelConfig, key: str = "model.pretrained_dit_path"):
    """A pretrained FluxTransformer2DModel whose shape must match `model.dit`."""
    from diffusers import FluxTransformer2DModel

    local = resolve_dir(uri, key, DIT_FILES)
    # Loading straight into the configured dtype halves peak host memory for bf16 (24 GB rather than 48 GB at 12 B).
    dtype = torch.bfloat16 if model_cfg.dtype == "bfloat16" else torch.float32
    dit = FluxTransformer2DModel.from_pretrained(str(local), local_files_only=True, torch_dtype=dtype)
    for name, want in model_cfg.dit.kwargs().items():
        got = dit.config.get(name)
        if (list(got) if isinstance(got, (list, tuple)) else got) != want:
            raise ValueError(f"{key}: the DiT at {uri} has {name}={got}, but model.dit.{name} is {want}")
    return dit


class Restorer(nn.Module):
    """Restores a degraded image by flowing its latent to a clean one, conditioned on it and on a prompt."""

    def __init__(self, cfg: ModelConfig, dit, codec: nn.Module, text: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.dit = dit
        self.codec = codec
        self.text = text
        self._generator = torch.Generator().manual_seed(0)

    def train(self, mode: bool = True) -> "Restorer":
        # The frozen parts stay in eval mode: dropout in the text encoder would make prompt embeddings random.
        super().train(mode)
        self.codec.eval()
        self.text.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def _prompt_embeddings(self, prompts: list[str], images_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = self.text.encode(prompts, images_B3HW if self.text.needs_image else None)
        return hidden.to(images_B3HW.device), pooled.to(images_B3HW.device)

    def _fit(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        return resize(images_B3HW, fit_size(*images_B3HW.shape[-2:], self.cfg.resolution, self.cfg.grid))

    def forward(
        self, clean: torch.Tensor, degraded: torch.Tensor, prompts: list[str], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The flow-matching loss on the target tokens for a batch of B×3×H×W pairs in [0, 1].

        `generator` (a CPU torch.Generator) draws sigmas, noise and prompt dropout; None uses the restorer's own.
        """
        if clean.shape != degraded.shape or clean.dim() != 4 or clean.shape[1] != 3:
            raise ValueError(f"clean {tuple(clean.shape)} and degraded {tuple(degraded.shape)} must both be B×3×H×W")
        if len(prompts) != clean.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for a batch of {clean.shape[0]}")
        gen = self._generator if generator is None else generator
        clean, degraded = self._fit(clean.float()), self._fit(degraded.float())
        with torch.no_grad():
            x0 = self.codec.encode(clean)
            y = self.codec.encode(degraded)
        drop = torch.rand(len(prompts), generator=gen) < self.cfg.prompt_dropout
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        hidden, pooled = self._prompt_embeddings(prompts, degraded)
        sigma = flow.sample_sigmas(len(prompts), self.cfg.shift, self.cfg.logit_mean, self.cfg.logit_std, gen).to(x0.device)
        src = flow.source(self.cfg.flow, y, self.cfg.bridge_noise, gen)
        x_t = flow.interpolate(x0, src, sigma)
        target = pack(flow.velocity_target(x0, src))
        rows, cols = x0.shape[-2] // 2, x0.shape[-1] // 2
        v = predict_velocity(self.dit, pack(x_t), pack(y), rows, cols, hidden, pooled, sigma)
        return flow.weighted_mse(v, target, self.cfg.loss_weighting, self.cfg.loss_floor)

    @torch.no_grad()
    def restore(
        self,
        degraded: torch.Tensor | list[torch.Tensor],
        prompts: list[str],
        num_steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        keep_detail: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Restored images in [0, 1] at the input sizes.

        The DiT works at the configured area, so an input larger than that comes back resized up from it. With
        `keep_detail`, the input's own detail finer than that scale (the input less its version at the working
        size) is added back to the result: sharp output for degradations that live at coarse scales (haze, low
        light, colour casts), at the cost of keeping fine-scale ones (noise, rain streaks) as they were.

        `degraded` is a B×3×H×W tensor or a list of 3×H×W tensors of any sizes; images that fit to the same
        token grid run as one batch. Image i's noise comes from `seed + i`, so it does not depend on batching.
        """
        images = list(degraded) if isinstance(degraded, (list, tuple)) else list(degraded.unbind(0))
        if not images:
            raise ValueError("no images to restore")
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
        for img in images:
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"each image must be 3×H×W, got {tuple(img.shape)}")
            if not img.is_floating_point():
                # A uint8 image read as floats would be 255 times too bright and come back clipped white.
                raise ValueError(f"images must be floats in [0, 1], got {img.dtype} (divide uint8 images by 255)")
        num_steps = self.cfg.num_steps if num_steps is None else num_steps
        guidance = self.cfg.guidance if guidance is None else guidance
        dev = self.device
        sizes = [fit_size(*img.shape[-2:], self.cfg.resolution, self.cfg.grid) for img in images]
        out: list[torch.Tensor] = [None] * len(images)
        for size, idx in buckets(sizes).items():
            batch = torch.stack([resize(images[i][None].to(dev).float(), size)[0] for i in idx])
            y = self.codec.encode(batch)
            noise = torch.stack(
                [torch.randn(y.shape[1:], generator=torch.Generator().manual_seed(seed + i)) for i in idx]
            ).to(y)
            start = noise if self.cfg.flow == "noise" else y + self.cfg.bridge_noise * noise
            text = self._prompt_embeddings([prompts[i] for i in idx], batch)
            empty = self._prompt_embeddings([""] * len(idx), batch) if guidance != 1.0 else None
            rows, cols = y.shape[-2] // 2, y.shape[-1] // 2
            x0 = sample(self.dit, pack(start), pack(y), rows, cols, text, empty, num_steps, self.cfg.shift, guidance)
            restored = self.codec.decode(unpack(x0, y.shape[-2], y.shape[-1]))
            for j, i in enumerate(idx):
                full = tuple(images[i].shape[-2:])
                out[i] = resize(restored[j : j + 1], full)[0]
                if keep_detail and full != size:  # batch[j] is the input at the working size
                    detail = images[i].to(dev).float() - resize(batch[j : j + 1], full)[0]
                    out[i] = (out[i] + detail).clamp(0.0, 1.0)
        return out if isinstance(degraded, (list, tuple)) else torch.stack(out)

    def save(self, directory: str, card: dict) -> None:
        """Write `dit/` (diffusers safetensors) and `model_card.json` to a local directory or s3:// URI."""
        save_model(self.dit, self.cfg, directory, card)


def save_dit(dit, directory: Path, max_shard_size: int | str = "10GB") -> None:
    """Write a DiT as diffusers' `from_pretrained` reads it: `config.json` and safetensors shards with their index.

    `dit.save_pretrained` keeps tensors that share storage in one shard. A DiT merged from a ZeRO-1/2
    checkpoint holds views of one flat fp32 buffer, so it would write a 12 B model as a single 48 GB file
    (and older safetensors releases serialise a shard in memory before writing it). Here the shards are cut
    by size alone: the views do not overlap.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    dit.save_config(str(directory))
    state = dit.state_dict()
    split = split_torch_state_dict_into_shards({name: value.to("meta") for name, value in state.items()},
                                               max_shard_size=max_shard_size,
                                               filename_pattern="diffusion_pytorch_model{suffix}.safetensors")
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name].contiguous() for name in names}, str(directory / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": split.tensor_to_filename}
        (directory / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def save_model(dit, model_cfg: ModelConfig, directory: str, card: dict, max_shard_size: int | str = "10GB") -> None:
    """Write a DiT as `dit/` (`save_dit`) and `card` plus `model_cfg` as `model_card.json`.

    `load_restorer` builds the restorer the card's model section describes, in its dtype, around that DiT.
    `directory` is local or an s3:// URI.
    """
    if "://" in directory:
        with tempfile.TemporaryDirectory() as tmp:
            save_model(dit, model_cfg, tmp, card, max_shard_size)
            from realrestorer.storage import filesystem

            fs, path = filesystem(directory)
            # A stale shard index left by an earlier save would win over a new single file when loading.
            if fs.exists(f"{path.rstrip('/')}/dit"):
                fs.rm(f"{path.rstrip('/')}/dit", recursive=True)
            fs.put(tmp.rstrip("/") + "/", path.rstrip("/"), recursive=True)
        return
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "dit").exists():
        shutil.rmtree(root / "dit")
    save_dit(dit, root / "dit", max_shard_size)
    full = {**card, "version": CARD_VERSION, "model": model_cfg.model_dump(mode="json")}
    (root / CARD_NAME).write_text(json.dumps(full, indent=2, sort_keys=True))


def build_restorer(model_cfg: ModelConfig) -> Restorer:
    """The restorer of `model_cfg`: codec and text encoder frozen, DiT random or from `model.pretrained_dit_path`."""
    codec = build_codec(model_cfg)
    text = build_text_encoder(model_cfg)
    if codec.channels * 4 != model_cfg.dit.in_channels:
        raise ValueError(f"model.dit.in_channels is {model_cfg.dit.in_channels}; the codec's tokens have {codec.channels * 4}")
    if codec.downscale * 2 != model_cfg.grid:
        raise ValueError(f"the codec downscales by {codec.downscale}; model.resolution assumes a grid of {model_cfg.grid}")
    for name in ("joint_attention_dim", "pooled_projection_dim"):
        if getattr(model_cfg.dit, name) != text.hidden_size:
            raise ValueError(f"model.dit.{name} is {getattr(model_cfg.dit, name)}; the text encoder's width is {text.hidden_size}")
    dit = load_dit(model_cfg.pretrained_dit_path, model_cfg) if model_cfg.pretrained_dit_path else build_dit(model_cfg)
    restorer = Restorer(model_cfg, dit, codec, text)
    if model_cfg.dtype == "bfloat16":
        restorer.to(torch.bfloat16)
    return restorer


def check_model_files(model_cfg: ModelConfig) -> None:
    """Fail with one line, downloading nothing, when a pretrained component named in `model_cfg` lacks a file.

    The driver calls it before starting workers, which would otherwise each fail with a traceback.
    """
    from realrestorer.model.codecs import VAE_FILES
    from realrestorer.model.text import QWEN_VL_FILES, SENTENCE_ENCODER_FILES

    text_files = SENTENCE_ENCODER_FILES if model_cfg.text_encoder == "minilm" else QWEN_VL_FILES
    for key, uri, groups in (
        ("model.pretrained_dit_path", model_cfg.pretrained_dit_path, DIT_FILES),
        ("model.vae_path", model_cfg.vae_path if model_cfg.codec == "vae" else None, VAE_FILES),
        ("model.text_encoder_path", model_cfg.text_encoder_path, text_files),
    ):
        if uri:
            check_files(uri, key, groups)


def load_restorer(uri: str, key: str = "checkpoint") -> Restorer:
    """A restorer from a consolidated directory (local or s3://): `dit/` + `model_card.json`."""
    local = resolve_dir(uri, key, ((CARD_NAME,), ("dit/config.json",)))
    card = json.loads((local / CARD_NAME).read_text())
    if card.get("version", 0) > CARD_VERSION:
        raise ValueError(f"{key}: {uri} has model card version {card.get('version')}; this code reads up to {CARD_VERSION}")
    cfg = ModelConfig.model_validate({**card["model"], "pretrained_dit_path": str(local / "dit")})
    return build_restorer(cfg)
