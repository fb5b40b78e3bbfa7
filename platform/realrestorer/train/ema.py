"""An exponential moving average of the DiT's weights, kept in fp32 on each worker."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class EMA:
    """fp32 shadow weights: after each step, shadow ← decay·shadow + (1 − decay)·weights."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Shadow weights, named as the module's parameters."""
        return dict(self.shadow)

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous().cpu() for k, v in self.shadow.items()}, str(path))

    def load(self, path: Path) -> None:
        # Straight to the shadow's device: every worker of a node loads it, and a host copy each would add up.
        device = next(iter(self.shadow.values())).device if self.shadow else torch.device("cpu")
        loaded = load_file(str(path), device=str(device))
        missing = sorted(set(self.shadow) - set(loaded))
        if missing:
            raise ValueError(f"EMA file {path} lacks {len(missing)} weights, e.g. {missing[0]}")
        self.shadow = {k: loaded[k] for k in self.shadow}

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """Run the module with the shadow weights, restoring its own weights afterwards."""
        saved = {}
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in self.shadow:
                    saved[name] = p.detach().clone()
                    p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if name in saved:
                        p.copy_(saved[name])
