"""The config tree: presets load, overrides apply, mistakes fail at load time with the key named."""

from __future__ import annotations

import pytest

from realrestorer.config import PRESETS, ConfigError, apply_overrides, load_config


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset


def test_overrides_are_typed():
    cfg = load_config("tiny", ["degrade.severity_max=0.75", "seed=11", "degrade.reflection_layers=null"])
    assert cfg.degrade.severity_max == 0.75 and cfg.seed == 11 and cfg.degrade.reflection_layers is None


def test_override_syntax_and_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("tiny", ["degrade.severity_max"])
    with pytest.raises(ConfigError, match="degrade.bogus"):
        load_config("tiny", ["degrade.bogus=1"])
    with pytest.raises(ConfigError, match="severity_max"):
        load_config("tiny", ["degrade.severity_max=1.5"])
    with pytest.raises(ConfigError, match="exceeds"):
        load_config("tiny", ["degrade.severity_min=0.9", "degrade.severity_max=0.1"])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 5\ndegrade:\n  severity_max: 0.5\n")
    cfg = load_config(str(path))
    assert (cfg.preset, cfg.seed, cfg.degrade.severity_max) == ("mine", 5, 0.5)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_apply_overrides_does_not_mutate():
    tree = {"a": {"b": 1}}
    assert apply_overrides(tree, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    assert tree == {"a": {"b": 1}}
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides(tree, ["a.b.c=1"])
