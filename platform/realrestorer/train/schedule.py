"""The learning-rate schedule of a stage.

Pure functions of (stage config, step), so a resumed run needs nothing but the
step count to land on the same values.
"""

from __future__ import annotations

import math

from realrestorer.train.config import StageConfig


def learning_rate(stage: StageConfig, step: int) -> float:
    """LR of optimizer step `step` (0-based): linear warmup, then constant or cosine."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    if stage.schedule == "constant":
        return stage.lr
    progress = min(1.0, (step - stage.warmup_steps) / max(1, stage.steps - 1 - stage.warmup_steps))
    floor = stage.min_lr_ratio
    return stage.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

