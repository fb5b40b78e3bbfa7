"""The DiT call: 2×2 token packing, FLUX.1 Kontext position ids, reference tokens after the target tokens.

The DiT itself is a plain diffusers `FluxTransformer2DModel`, so it saves and loads without this code.
"""

from __future__ import annotations

import torch


def pack(latents_BCHW: torch.Tensor) -> torch.Tensor:
    """B×C×H×W latents → B×(H/2·W/2)×4C tokens, row-major over the 2×2 cells (FLUX's packing)."""
    b, c, h, w = latents_BCHW.shape
    x = latents_BCHW.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens_BNC: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack` for a latent of `height`×`width` cells."""
    b, _, c4 = tokens_BNC.shape
    x = tokens_BNC.view(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, height, width)


def image_ids(rows: int, cols: int, index: int, device=None) -> torch.Tensor:
    """(rows·cols)×3 position ids: axis 0 = image index (0 target, 1 reference), then row and column."""
    ids = torch.zeros(rows, cols, 3, device=device)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows, device=device)[:, None]
    ids[..., 2] = torch.arange(cols, device=device)[None, :]
    return ids.reshape(rows * cols, 3)


def compile_blocks(dit) -> None:
    """Compile each of the DiT's transformer blocks in place with torch.compile (regional compilation).

    Fusing each block's elementwise work (norms, modulation, RoPE, GELU) around its matrix products is what
    the compiler buys; compiling block by block keeps compile time to one graph per block shape and the
    state-dict keys as they were, so checkpoints and consolidated weights do not change.
    """
    for block in (*dit.transformer_blocks, *dit.single_transformer_blocks):
        block.compile()


def predict_velocity(
    dit,
    noisy_BNC: torch.Tensor,
    reference_BNC: torch.Tensor,
    rows: int,
    cols: int,
    text_BLD: torch.Tensor,
    pooled_BD: torch.Tensor,
    sigma_B: torch.Tensor,
    guidance: float | None = None,
) -> torch.Tensor:
    """The DiT's velocity for the target tokens, given the reference tokens and the prompt.

    Reference tokens share the target's row/column ids but sit on image index 1, as in FLUX.1 Kontext,
    so attention can align the two images cell by cell while telling them apart.
    """
    n = noisy_BNC.shape[1]
    dtype = dit.dtype
    dev = noisy_BNC.device
    ids = torch.cat([image_ids(rows, cols, 0, dev), image_ids(rows, cols, 1, dev)])
    txt_ids = torch.zeros(text_BLD.shape[1], 3, device=dev)
    guidance_B = None
    if dit.config.guidance_embeds:
        guidance_B = torch.full_like(sigma_B, 1.0 if guidance is None else guidance, dtype=dtype)
    out = dit(
        hidden_states=torch.cat([noisy_BNC, reference_BNC], dim=1).to(dtype),
        encoder_hidden_states=text_BLD.to(dtype),
        pooled_projections=pooled_BD.to(dtype),
        # diffusers multiplies the timestep by 1000 itself: it takes sigma in [0, 1].
        timestep=sigma_B.to(dtype),
        img_ids=ids,
        txt_ids=txt_ids,
        guidance=guidance_B,
        return_dict=False,
    )[0]
    return out[:, :n].float()
