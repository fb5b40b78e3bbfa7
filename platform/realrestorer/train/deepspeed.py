"""The DeepSpeed engine of a stage: its config (ZeRO stage, precision, AdamW, clipping) and what it wraps.

Building the dict imports no deepspeed, so the driver (and tests) can inspect
it without DeepSpeed's import-time side effects.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import uuid
from typing import Any, NamedTuple

import torch

from realrestorer.train.config import StageConfig
from realrestorer.train.schedule import learning_rate

# DeepSpeed prints a line every `steps_per_print` steps; the trainer logs its own metrics.
_QUIET = 10**9


def deepspeed_config(stage: StageConfig) -> dict[str, Any]:
    """DeepSpeed's config dict: bf16 with fp32 master weights on GPU (and fp32 gradient sums when micro-batches
    accumulate), plain fp32 on CPU."""
    zero: dict[str, Any] = {"stage": stage.zero_stage}
    if stage.zero_stage >= 2:
        # Overlapping reduction with backward needs CUDA streams; on CPU it only adds copies.
        zero.update(contiguous_gradients=True, overlap_comm=stage.use_gpu)
    if stage.zero_stage == 3:
        # Gather whole weights at save time, so the last checkpoint also holds a servable module.
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    config: dict[str, Any] = {
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
    if stage.use_gpu and stage.grad_accumulation > 1:
        # Otherwise micro-batch gradients are summed in bf16, whose 8-bit mantissa drops any addend below 1/256 of
        # the running sum. fp32 sums cost 4 bytes a parameter of each worker's partition. StageConfig allows this
        # only under ZeRO-2/3: ZeRO-0 has no fp32 sums in DeepSpeed, and at ZeRO-1 they switch DeepSpeed to its
        # BF16 optimizer, whose checkpoints zero_to_fp32 cannot consolidate ("is not a zero checkpoint").
        config["data_types"] = {"grad_accum_dtype": "fp32"}
    return config


def init_one_process(device: torch.device) -> None:
    """Make this process a world of one for DeepSpeed (NCCL on GPU, gloo on CPU), outside Ray Train.

    For the drivers that time or train the engine on a machine without Ray (benchmarks/); Ray Train's workers
    get their process group from Ray.
    """
    import deepspeed

    if torch.distributed.is_initialized():
        return
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    # A file rendezvous, not a TCP port: a port found free and then bound by torch can be taken in between by
    # another process (a local Ray cluster opens many), which failed a test with EADDRINUSE.
    rendezvous = os.path.join(tempfile.gettempdir(), f"realrestorer-rendezvous-{os.getpid()}-{uuid.uuid4().hex}")
    atexit.register(lambda: os.path.exists(rendezvous) and os.remove(rendezvous))  # torch's store reopens it by path
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                               auto_mpi_discovery=False, init_method=f"file://{rendezvous}", rank=0, world_size=1)


class DiTObjective(torch.nn.Module):
    """What the engine wraps: the restorer's training loss, with the DiT as its only submodule.

    ZeRO then partitions, casts and checkpoints the trained weights alone. The frozen codec and text encoder stay
    whole on every rank, outside the engine: under ZeRO-3 each forward of a partitioned module is a collective,
    and the text encoder runs only on the ranks that meet a prompt missing from their cache, so the ranks'
    collectives would stop matching (gloo aborts with "collective mismatch"; NCCL hangs).
    """

    def __init__(self, restorer):
        super().__init__()
        self.dit = restorer.dit
        object.__setattr__(self, "restorer", restorer)  # not registered: DeepSpeed must not see its frozen parts

    def forward(self, clean, degraded, prompts, generator=None):
        return self.restorer(clean, degraded, prompts, generator=generator)


def build_engine(restorer, stage: StageConfig, device: torch.device):
    """(engine, optimizer) training `restorer`'s DiT on `device`; the restorer's frozen parts move there too.

    DeepSpeed places and casts the DiT itself (the whole DiT reaches each GPU before ZeRO-3 partitions it:
    24 GB at 12 B in bf16; deepspeed.zero.Init would avoid that).
    """
    import deepspeed

    restorer.codec.to(device)
    restorer.text.to(device)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=DiTObjective(restorer),
        model_parameters=[p for p in restorer.dit.parameters() if p.requires_grad],
        config=deepspeed_config(stage),
    )
    return engine, optimizer


class Trainee(NamedTuple):
    """What a training worker steps: the restorer, the engine over its DiT, the optimizer and the EMA (or None)."""

    restorer: Any
    engine: Any
    optimizer: Any
    ema: Any
    num_params: int  # the DiT's, counted before ZeRO-3 partitions it


def build_trainee(cfg, stage: StageConfig, device: torch.device, init_dit: str | None = None,
                  init_key: str = "model.pretrained_dit_path") -> Trainee:
    """The restorer of `cfg` set up as `stage` trains it, its DiT from `init_dit` where given: gradient
    checkpointing, compiled blocks, the DeepSpeed engine on `device` and the EMA."""
    from realrestorer.model.restorer import build_restorer, load_dit
    from realrestorer.model.transformer import compile_blocks
    from realrestorer.train.ema import EMA

    # diffusers initialises weights from torch's global generator: seed it so a run's start is reproducible.
    torch.manual_seed(cfg.seed)
    restorer = build_restorer(cfg.model)
    if init_dit:
        restorer.dit = load_dit(init_dit, cfg.model, key=init_key)
    num_params = sum(p.numel() for p in restorer.dit.parameters())
    if stage.grad_checkpointing:
        restorer.dit.enable_gradient_checkpointing()
    if stage.compile:
        compile_blocks(restorer.dit)
    engine, optimizer = build_engine(restorer, stage, device)
    # Built after the engine, from the weights it holds. In the Ray trainer on every rank: each validates its share
    # of the val set with the average; ZeRO 0-2 (EMA needs one of them) keeps the same weights on every rank, so the
    # shadows agree.
    ema = EMA(restorer.dit, stage.ema_decay) if stage.ema_decay is not None else None
    return Trainee(restorer, engine, optimizer, ema, num_params)
