"""What a training step costs and how fast it runs: FLOPs, tokens, samples/s, MFU."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from realrestorer.model.config import ModelConfig
from realrestorer.model.restorer import build_dit
from realrestorer.model.transformer import predict_velocity

# Dense bf16 tensor-core peaks (no sparsity), by a substring of the device name.
_PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def cpu_math(threads: int) -> None:
    """Set up the calling thread's CPU math: subnormal floats flushed to zero, then `threads` intra-op threads.

    Call it before the thread's first parallel region, so the intra-op threads it starts inherit the flush:
    subnormals take a slow microcode path on x86 CPUs, and the tiny preset's steps on real pairs hit them
    (see README). Both settings are per thread, and Ray Train runs the training function in a thread of its own.
    """
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads)


def cuda_math() -> None:
    """GPU attention set-up: cuDNN's SDPA kernels off (flash and memory-efficient SDPA remain).

    cuDNN's SDPA backward failed on FLUX-shaped stacks on an H100 (CUBLAS_STATUS_EXECUTION_FAILED; ENVIRONMENT.md).
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


@dataclass(frozen=True)
class StepCost:
    """The DiT's work for one training sample at the training resolution."""

    flops_per_sample: float  # forward + backward matmul and attention FLOPs, as PyTorch's FLOP counter counts them
    tokens_per_sample: int  # image tokens the DiT attends over: target + reference
    flops_6nt_per_sample: float  # 6 × parameters × sequence tokens (image + text): the usual estimate


def dit_step_cost(model_cfg: ModelConfig) -> StepCost:
    """Count the FLOPs of one sample's forward and backward through the DiT.

    The DiT is built on the meta device, so counting allocates nothing and costs
    no compute even for the 12B shape. The frozen codec and text encoder are left
    out, as model FLOPs in MFU usually are.

    `flops_6nt_per_sample` is the common transformer estimate, 6 FLOPs per parameter per token, which many
    trainers' MFU figures use. It overstates a FLUX DiT's work: the modulation layers act once per sample and the
    text stream's weights only on the text tokens (1.7× the counted FLOPs at FLUX width, 2 + 4 blocks at 512²).
    It is reported beside the counted MFU so figures from either convention can be compared.
    """
    side = model_cfg.resolution // model_cfg.grid
    num_tokens = side * side
    with torch.device("meta"):
        dit = build_dit(model_cfg)
        noisy = torch.zeros(1, num_tokens, model_cfg.dit.in_channels)
        reference = torch.zeros(1, num_tokens, model_cfg.dit.in_channels)
        text = torch.zeros(1, model_cfg.max_text_tokens, model_cfg.dit.joint_attention_dim)
        pooled = torch.zeros(1, model_cfg.dit.pooled_projection_dim)
        sigma = torch.zeros(1)
    with FlopCounterMode(display=False) as counter:
        velocity = predict_velocity(dit, noisy, reference, side, side, text, pooled, sigma)
        velocity.sum().backward()
    num_params = sum(p.numel() for p in dit.parameters())
    sequence = 2 * num_tokens + model_cfg.max_text_tokens
    return StepCost(flops_per_sample=float(counter.get_total_flops()), tokens_per_sample=2 * num_tokens,
                    flops_6nt_per_sample=6.0 * num_params * sequence)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of one accelerator, or None where it is not known (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _PEAK_BF16_FLOPS.items() if key in name), None)


def rates(cost: StepCost, num_samples: int, seconds: float, num_devices: int, peak: float | None) -> dict[str, float]:
    """samples/s, tokens/s and (where the peak is known) MFU of `num_samples` processed in `seconds`.

    `mfu` counts the DiT's FLOPs; `mfu_6nt` takes 6·N·T instead (see `dit_step_cost`).
    """
    if seconds <= 0 or num_samples <= 0:
        raise ValueError(f"need a positive sample count and duration, got {num_samples} samples in {seconds} s")
    samples_per_s = num_samples / seconds
    out = {"samples_per_s": samples_per_s, "tokens_per_s": samples_per_s * cost.tokens_per_sample}
    if peak is not None:
        out["mfu"] = samples_per_s * cost.flops_per_sample / (num_devices * peak)
        out["mfu_6nt"] = samples_per_s * cost.flops_6nt_per_sample / (num_devices * peak)
    return out


class Stopwatch:
    """Wall time of a window of steps; on GPU it waits for queued kernels so the window is real."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self) -> float:
        """Seconds since the last lap (or creation); starts the next window."""
        now = self._now()
        elapsed, self.start = now - self.start, now
        return elapsed
