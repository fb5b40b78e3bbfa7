"""Any size and aspect ratio in, the configured area on the token grid for the DiT, the input size out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_size(height: int, width: int, side: int, grid: int) -> tuple[int, int]:
    """The size with about side² pixels, the input's aspect ratio, and both sides multiples of `grid`."""
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}×{width} is empty")
    scale = (side * side / (height * width)) ** 0.5
    return max(grid, round(height * scale / grid) * grid), max(grid, round(width * scale / grid) * grid)


def resize(images_B3HW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing (a no-op at the same size)."""
    if tuple(images_B3HW.shape[-2:]) == tuple(size):
        return images_B3HW
    out = F.interpolate(images_B3HW.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0)


def buckets(sizes: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images grouped by their fitted size, so each group runs as one batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(tuple(s), []).append(i)
    return groups
