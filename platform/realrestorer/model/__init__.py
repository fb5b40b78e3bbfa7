"""The DiT restorer: `build_restorer(cfg.model)`, `load_restorer(uri)` and the `Restorer` module.

Submodules that need torch or diffusers are imported on first use, so that reading
the config (`realrestorer.model.config`) stays light: the dataset builder's Ray
workers import the config tree and must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DiTConfig": "realrestorer.model.config",
    "ModelConfig": "realrestorer.model.config",
    "MissingWeightsError": "realrestorer.model.weights",
    "Restorer": "realrestorer.model.restorer",
    "build_dit": "realrestorer.model.restorer",
    "build_restorer": "realrestorer.model.restorer",
    "load_restorer": "realrestorer.model.restorer",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'realrestorer.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = list(_EXPORTS)
