"""The one config tree: `PipelineConfig`, loaded from a preset YAML and `a.b=c` overrides.

Each section is owned by its package (`degrade.config.DegradeConfig`, ...) and
assembled here. Unknown keys are errors, so a typo fails at load time.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from realrestorer.data.config import DataConfig
from realrestorer.degrade.config import DegradeConfig
from realrestorer.model.config import ModelConfig
from realrestorer.storage import StorageConfig
from realrestorer.tracking import TrackingConfig
from realrestorer.train.config import TrainConfig

PRESETS = ("tiny", "small", "flux-12b")


class PipelineConfig(BaseModel):
    """Everything a run needs; logged resolved with every run."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("tiny", description="Name of the preset this config was built from.")
    seed: int = Field(0, description="Master seed; every random choice derives from it.")
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _pairs_as_large_as_the_model_sees(self) -> "PipelineConfig":
        if self.data.resolution < self.model.resolution:
            raise ValueError(f"data.resolution {self.data.resolution} is below model.resolution {self.model.resolution}: "
                             "every training pair would be upscaled, and its clean target blurred; build larger pairs")
        return self


class ConfigError(ValueError):
    """A config that cannot be loaded; the message names the key."""


def _parse_value(text: str) -> Any:
    # YAML scalars: 3 → int, 0.5 → float, true → bool, null → None, [1, 2] → list.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `a.b.c=value` entries on a nested dict (returns a new dict)."""
    tree = json.loads(json.dumps(tree))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return tree


def preset_tree(name: str) -> dict[str, Any]:
    """The raw YAML of a built-in preset, or of a YAML file when `name` is a path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
    elif name in PRESETS:
        text = resources.files("realrestorer.presets").joinpath(f"{name}.yaml").read_text()
    else:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or give a .yaml path")
    tree = yaml.safe_load(text) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"preset {name!r} is not a mapping")
    return tree


def load_config(preset: str = "tiny", overrides: list[str] | None = None) -> PipelineConfig:
    """Resolve a preset plus overrides into a validated `PipelineConfig`."""
    tree = apply_overrides(preset_tree(preset), list(overrides or []))
    tree.setdefault("preset", Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        got = first.get("input")
        suffix = "" if isinstance(got, dict) else f" (got {got!r})"
        raise ConfigError(f"{where}: {message}{suffix}") from None


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "degrade.severity_max=0.8") -> None:
    """The `--preset` and `--set KEY=VALUE` options every command and job takes."""
    parser.add_argument("--preset", default="tiny", help="preset name (tiny, small, flux-12b) or a YAML file (default: tiny)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )
