"""Mixed: two or three of the nine degradations composed in physical order.

Light meets the scene and the weather first, then the optics, the sensor, the
display being photographed and finally the encoder, so a mixture is applied in
that order: haze → rain → reflection → flare → blur → lowlight → noise → moire
→ compression. Each step is a full degradation with its own params, recorded
as {"steps": [{"task": ..., "severity": ..., ...params}, ...]}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A reflection step records whether it was given a layer as context (see reflection.py), so pass it on.
SAMPLE_CONTEXT = ("reflection",)

PHYSICAL_ORDER: tuple[str, ...] = ("haze", "rain", "reflection", "flare", "blur", "lowlight", "noise", "moire", "compression")
# Each step's severity is the mixture's severity shifted by at most this much, so
# a mixture stays varied while a higher severity still makes every step stronger.
_SPREAD = 0.1


def _model(task: str):
    # Through the registry, imported late: the registry imports this module.
    from realrestorer.degrade import model

    return model(task)


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float, **context: Any) -> dict[str, Any]:
    num_steps = int(rng.integers(2, 4))
    picked = sorted(rng.choice(len(PHYSICAL_ORDER), size=num_steps, replace=False).tolist())
    shifts = rng.uniform(-_SPREAD, _SPREAD, size=num_steps)
    # One generator per step, seeded up front: a step's draws never shift the next step's.
    step_seeds = rng.integers(0, 2**63, size=num_steps)
    steps = []
    for index, shift, step_seed in zip(picked, shifts, step_seeds):
        task = PHYSICAL_ORDER[index]
        sub_severity = float(np.clip(severity + shift, 0.0, 1.0))
        impl = _model(task)
        step_context = {key: context[key] for key in getattr(impl, "SAMPLE_CONTEXT", ()) if key in context}
        params = impl.sample(rgb, np.random.default_rng(int(step_seed)), sub_severity, **step_context)
        steps.append({"task": task, "severity": sub_severity, **params})
    return {"steps": steps}


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    """Apply the recorded steps in order; every step gets the context (each uses only its own keys)."""
    tasks = [step["task"] for step in params["steps"]]
    ranks = [PHYSICAL_ORDER.index(task) if task in PHYSICAL_ORDER else -1 for task in tasks]
    if min(ranks) < 0 or ranks != sorted(ranks) or len(set(ranks)) != len(ranks):
        raise ValueError(f"mixed steps {tasks} must be distinct tasks in the order {' → '.join(PHYSICAL_ORDER)}")
    out = rgb
    for step in params["steps"]:
        # Each step sees an image in [0, 1], as it would if applied on its own.
        out = np.clip(_model(step["task"]).render(out, step, **context), 0.0, 1.0).astype(np.float32, copy=False)
    return out
