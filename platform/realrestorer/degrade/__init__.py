"""The degradation engine: clean image + seeded generator → degraded image + params.

Every model is a module with two pure functions:

    sample(rgb, rng, severity) -> params        # draws every random choice
    render(rgb, params, **context) -> degraded  # deterministic given params

`rgb` is float32 H×W×3 in [0, 1]. Everything random that `render` needs (noise
fields, trajectories) is drawn from `params["seed"]`, so `apply(task, image,
params)` reproduces `degrade(...)` bit for bit. Optional `context` carries
inputs that are not parameters: `reflection=` (a second image for the
reflection layer) and `depth=` (a depth map or provider for haze).
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np

from realrestorer.degrade.color import like_input, to_rgb_float
from realrestorer.degrade.memory import reuse_freed_buffers

# Every process that degrades images (CLI, Ray Data workers, benchmarks) imports
# this package first; see memory.py for why this halves the engine's time.
reuse_freed_buffers()

# The nine RealRestorer tasks and their fixed prompts, verbatim (released
# checkpoints were trained on exactly these strings).
TASKS: dict[str, str] = {
    "blur": "Please deblur the image and make it sharper",
    "compression": "Please restore the image clarity and artifacts.",
    "moire": "Please remove the moiré patterns from the image",
    "lowlight": "Please restore this low-quality image, recovering its normal brightness and clarity.",
    "noise": "Please remove noise from the image.",
    "flare": "Please remove the lens flare and glare from the image.",
    "reflection": "Please remove the reflection from the image.",
    "haze": "Please dehaze the image",
    "rain": "Please remove the rain from the image and restore its clarity.",
}

# Beyond the nine: web-style re-encoding chains and physically ordered mixtures.
EXTRA_TASKS: tuple[str, ...] = ("web", "mixed")
ALL_TASKS: tuple[str, ...] = tuple(TASKS) + EXTRA_TASKS


CONTEXT_KEYS = ("reflection", "depth")


def model(task: str) -> ModuleType:
    """The module implementing `task` (each task is `realrestorer.degrade.<task>`)."""
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(ALL_TASKS)}")
    return importlib.import_module(f"realrestorer.degrade.{task}")


def _check_context(context: dict[str, Any]) -> None:
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise ValueError(f"unknown context {unknown}; accepted: {', '.join(CONTEXT_KEYS)}")


def prompt(task: str) -> str:
    """The fixed instruction for one of the nine tasks."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} has no fixed prompt; the nine tasks are: {', '.join(TASKS)}")
    return TASKS[task]


def degrade(
    task: str,
    image: np.ndarray,
    rng: np.random.Generator,
    severity: float | None = None,
    **context: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade `image` with `task`; return (degraded, params).

    The output has the input's shape and dtype, pixel-aligned with it. `severity`
    in [0, 1] (drawn uniformly from `rng` when None) scales the strength; the
    other parameters are drawn from `rng`. `params` is JSON-serialisable and
    `apply(task, image, params)` reproduces the output exactly.
    """
    impl = model(task)
    _check_context(context)
    if severity is None:
        severity = float(rng.uniform(0.0, 1.0))
    if not (isinstance(severity, (int, float)) and math.isfinite(severity) and 0.0 <= severity <= 1.0):
        raise ValueError(f"severity must be a number in [0, 1], got {severity!r}")
    rgb = to_rgb_float(image)
    # A model that records what context it was given (reflection: "external") lists it in SAMPLE_CONTEXT.
    sample_context = {key: context[key] for key in getattr(impl, "SAMPLE_CONTEXT", ()) if context.get(key) is not None}
    params = {"task": task, "severity": float(severity), **impl.sample(rgb, rng, float(severity), **sample_context)}
    return like_input(impl.render(rgb, params, **context), image), params


def apply(task: str, image: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    """Re-render a degradation from its recorded `params` (bit-exact with `degrade`)."""
    impl = model(task)
    _check_context(context)
    if params.get("task", task) != task:
        raise ValueError(f"params were recorded for task {params['task']!r}, not {task!r}")
    rgb = to_rgb_float(image)
    return like_input(impl.render(rgb, params, **context), image)


__all__ = ["TASKS", "EXTRA_TASKS", "ALL_TASKS", "model", "degrade", "apply", "prompt"]
