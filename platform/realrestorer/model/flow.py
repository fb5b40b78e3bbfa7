"""Flow matching on latents: the path from a source (noise, or the degraded latent) at sigma 1 to the clean latent at 0.

`noise`:  x_σ = (1-σ)·x0 + σ·ε,      velocity target ε - x0.
`bridge`: x_σ = (1-σ)·x0 + σ·y',     velocity target y' - x0, with y' = y + bridge_noise·ε (InDI-style:
          the path starts at the degraded latent y, so a model that has learned nothing is the identity).
"""

from __future__ import annotations

import torch


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Move sigmas towards 1 (shift > 1) so more steps and samples fall at high noise, as SD3/FLUX do."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigmas(
    batch: int, shift: float, mean: float, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training sigmas: a shifted logit-normal, B values in (0, 1)."""
    u = torch.randn(batch, generator=generator) * std + mean
    return shift_sigmas(torch.sigmoid(u), shift)


def schedule(num_steps: int, shift: float) -> torch.Tensor:
    """num_steps+1 sampler sigmas from 1 down to 0 over the shifted grid."""
    return shift_sigmas(torch.linspace(1.0, 0.0, num_steps + 1), shift)


def source(
    kind: str, degraded_BCHW: torch.Tensor, bridge_noise: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The sigma-1 end of the path for a batch of degraded latents."""
    eps = torch.randn(degraded_BCHW.shape, generator=generator).to(degraded_BCHW)
    if kind == "noise":
        return eps
    if kind == "bridge":
        return degraded_BCHW + bridge_noise * eps
    raise ValueError(f"unknown flow {kind!r}; choose 'noise' or 'bridge'")


def interpolate(clean: torch.Tensor, src: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    """x_σ on the straight path; sigma_B broadcasts over the trailing dims."""
    s = sigma_B.view(-1, *([1] * (clean.dim() - 1))).to(clean)
    return (1.0 - s) * clean + s * src


def velocity_target(clean: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """d x_σ / d σ: what the DiT learns to predict."""
    return src - clean


def weighted_mse(pred_BLC: torch.Tensor, target_BLC: torch.Tensor, weighting: str, floor: float) -> torch.Tensor:
    """The batch loss: plain MSE, or ('relative') each sample's MSE over its target's mean square plus `floor`.

    On the bridge the target's mean square is the loss of predicting nothing (the identity), so 'relative'
    scores each sample by how much of its degradation is undone, as mean PSNR does, instead of letting
    severe samples dominate the gradient.
    """
    per_sample = (pred_BLC - target_BLC).pow(2).flatten(1).mean(1)
    if weighting == "none":
        return per_sample.mean()
    if weighting == "relative":
        return (per_sample / (target_BLC.detach().pow(2).flatten(1).mean(1) + floor)).mean()
    raise ValueError(f"unknown loss weighting {weighting!r}; choose 'none' or 'relative'")


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + (sigma_next - sigma) * velocity
