"""The DeepSpeed config of a stage: ZeRO stage, precision, AdamW, clipping.

Building the dict imports no deepspeed, so the driver (and tests) can inspect
it without DeepSpeed's import-time side effects.
"""

from __future__ import annotations

from typing import Any

from realrestorer.train.config import StageConfig
from realrestorer.train.schedule import learning_rate

# DeepSpeed prints a line every `steps_per_print` steps; the trainer logs its own metrics.
_QUIET = 10**9


def deepspeed_config(stage: StageConfig) -> dict[str, Any]:
    """DeepSpeed's config dict: bf16 with fp32 master weights on GPU, plain fp32 on CPU."""
    zero: dict[str, Any] = {"stage": stage.zero_stage}
    if stage.zero_stage >= 2:
        # Overlapping reduction with backward needs CUDA streams; on CPU it only adds copies.
        zero.update(contiguous_gradients=True, overlap_comm=stage.use_gpu)
    if stage.zero_stage == 3:
        # Gather whole weights at save time, so the last checkpoint also holds a servable module.
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    return {
        "train_batch_size": stage.batch_size,
        "train_micro_batch_size_per_gpu": stage.micro_batch_size,
        "gradient_accumulation_steps": stage.grad_accumulation,
        "gradient_clipping": stage.grad_clip,
        # torch_adam: torch's AdamW; otherwise DeepSpeed JIT-builds FusedAdam (minutes, CUDA only). On GPU torch's
        # own fused kernel updates all parameters in a few launches instead of one per tensor and operation.
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": learning_rate(stage, 0),
                "betas": list(stage.betas),
                "eps": stage.eps,
                "weight_decay": stage.weight_decay,
                "torch_adam": True,
                "fused": stage.use_gpu,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": stage.use_gpu},
        "fp16": {"enabled": False},
        "steps_per_print": _QUIET,
        "wall_clock_breakdown": False,
    }
