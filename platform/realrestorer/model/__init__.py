"""The DiT restorer: `build_restorer(cfg.model)`, `load_restorer(uri)` and the `Restorer` module."""

from realrestorer.model.config import DiTConfig, ModelConfig
from realrestorer.model.restorer import Restorer, build_dit, build_restorer, load_restorer
from realrestorer.model.weights import MissingWeightsError

__all__ = ["DiTConfig", "ModelConfig", "MissingWeightsError", "Restorer", "build_dit", "build_restorer", "load_restorer"]
