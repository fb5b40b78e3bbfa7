"""A training step's random draws: the same flip or turn for both images of a pair, and per-micro-batch seeds.

Pure torch and numpy (no Ray), so a driver without Ray Train (benchmarks/stage1_quality.py) draws as the
trainer does.
"""

from __future__ import annotations

import numpy as np
import torch


def augment_pairs(clean: torch.Tensor, degraded: torch.Tensor, mode: str,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip or turn for each B×3×H×W pair's clean and degraded image.

    'hflip' mirrors about half the pairs left-right; 'dihedral' draws one of the eight flips and quarter
    turns per pair (square batches; others get the four flips); 'none' returns the batch as it is.
    """
    if mode == "none":
        return clean, degraded
    if mode not in ("hflip", "dihedral"):
        raise ValueError(f"unknown augmentation {mode!r}; choose 'none', 'hflip' or 'dihedral'")
    # Bit 0: mirror left-right, bit 1: upside down, bit 2: transpose (a quarter turn with the flips).
    draws = torch.randint(0, 8, (clean.shape[0],), generator=generator)
    draws &= 1 if mode == "hflip" else (7 if clean.shape[-1] == clean.shape[-2] else 3)
    for bit, turn in ((1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2)), (4, lambda t: t.transpose(-1, -2))):
        chosen = (draws & bit).bool().view(-1, 1, 1, 1)
        if chosen.any():
            clean, degraded = torch.where(chosen, turn(clean), clean), torch.where(chosen, turn(degraded), degraded)
    return clean, degraded


def step_seed(seed: int, step: int, micro_index: int) -> int:
    """The seed of one micro-batch's noise, sigmas and prompt dropout.

    `micro_index` counts micro-batches across all workers (rank × accumulation +
    i), so the noise of a global batch is the same however many workers share it.
    """
    return int(np.random.SeedSequence([seed, step, micro_index]).generate_state(1, dtype=np.uint64)[0] >> 1)
