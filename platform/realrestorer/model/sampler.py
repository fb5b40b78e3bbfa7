"""Euler sampling of the flow with classifier-free guidance against the empty prompt."""

from __future__ import annotations

import torch

from realrestorer.model.flow import euler_step, schedule
from realrestorer.model.transformer import predict_velocity


@torch.no_grad()
def sample(
    dit,
    start_BNC: torch.Tensor,
    reference_BNC: torch.Tensor,
    rows: int,
    cols: int,
    text: tuple[torch.Tensor, torch.Tensor],
    empty_text: tuple[torch.Tensor, torch.Tensor] | None,
    num_steps: int,
    shift: float,
    guidance: float,
) -> torch.Tensor:
    """Integrate from sigma 1 (`start_BNC`) to 0 and return the clean target tokens.

    With guidance ≠ 1 the conditional and unconditional passes share one batched forward:
    v = v_uncond + guidance · (v_cond - v_uncond).
    """
    hidden, pooled = text
    b = start_BNC.shape[0]
    guided = guidance != 1.0 and empty_text is not None and not dit.config.guidance_embeds
    if guided:
        hidden = torch.cat([hidden, empty_text[0]])
        pooled = torch.cat([pooled, empty_text[1]])
        reference_BNC = torch.cat([reference_BNC, reference_BNC])
    sigmas = schedule(num_steps, shift).tolist()
    x = start_BNC
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x_in = torch.cat([x, x]) if guided else x
        sigma_B = torch.full((x_in.shape[0],), sigma, device=x.device)
        v = predict_velocity(dit, x_in, reference_BNC, rows, cols, hidden, pooled, sigma_B, guidance)
        if guided:
            v = v[b:] + guidance * (v[:b] - v[b:])
        x = euler_step(x, v, sigma, sigma_next)
    return x
