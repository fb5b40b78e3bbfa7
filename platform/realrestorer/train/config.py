"""The `train` section of the config tree: one `StageConfig` per training stage.

Stage 1 (transfer) and stage 2 (SFT) run the same trainer; they differ only in
these values: data mix, LR schedule, init checkpoint, steps, batch size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

STAGES = ("stage1", "stage2")


class StageConfig(BaseModel):
    """Everything one training stage needs beyond the model and the data it reads."""

    model_config = ConfigDict(extra="forbid")

    # What to learn from, and for how long.
    steps: int = Field(200, ge=1, description="Optimizer steps of the whole stage (the planned step count).")
    batch_size: int = Field(16, ge=1, description="Global batch: samples per optimizer step over all workers.")
    micro_batch_size: int = Field(
        8, ge=1, description="Samples per worker per forward; gradient accumulation makes up the rest of the global batch."
    )
    init_from: str | None = Field(
        None,
        description="Where the DiT starts: None = as the model section builds it (random or model.pretrained_dit_path); "
        "a stage name ('stage1') = that stage's consolidated model of this run; otherwise a URI of a consolidated model.",
    )
    kinds: list[Literal["synthetic", "real", "proxy"]] = Field(
        ["synthetic"],
        description="Shard kinds read for training. 'synthetic' plus other kinds mixes them as `data.mixing` says "
        "(synthetic share and its schedule, web-style augmentation of inputs).",
    )
    augment: Literal["none", "hflip", "dihedral"] = Field(
        "hflip",
        description="Random geometry applied alike to both images of a training pair: 'hflip' mirrors left-right; "
        "'dihedral' also flips upside down and turns square pairs by quarter turns, for data without an up "
        "(on the built-in set it did worse than hflip: rain and reflections have one); 'none' keeps pairs as stored.",
    )
    shuffle_buffer: int = Field(256, ge=0, description="Rows in each worker's local shuffle buffer; 0 = stream order.")
    cache_mb: int = Field(
        1024, ge=0,
        description="Training pairs whose decoded size (counted in the dataset manifest, else in the shards' "
        "Parquet footers) is at most this many MB are read "
        "once and kept in Ray's object store, instead of being re-read and re-decoded every epoch; 0 = always stream.",
    )

    # Optimizer and schedule.
    lr: float = Field(1e-4, gt=0.0, description="Peak learning rate.")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="'constant' after warmup (stage 1) or 'cosine' decay to min_lr_ratio·lr (stage 2)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from 0 to lr.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Cosine floor as a share of lr.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0.0, description="Global gradient-norm clip; 0 = off.")
    ema_decay: float | None = Field(
        None, ge=0.0, lt=1.0, description="EMA of the DiT weights (served instead of the raw weights); None = off."
    )

    # Parallelism and memory.
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU on GPU clusters).")
    use_gpu: bool = Field(False, description="One GPU per worker, bf16 and NCCL; otherwise CPU, fp32 and gloo.")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs reserved per worker (also its torch thread count).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    grad_checkpointing: bool = Field(False, description="Recompute DiT block activations in backward to save memory.")
    compile: bool = Field(
        False,
        description="torch.compile each DiT block (regional compilation) before training: fused elementwise work, "
        "faster steps on GPU after a compile of a minute or so at the first step. Needs zero_stage <= 2.",
    )

    # Bookkeeping.
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints (the last step always checkpoints).")
    num_checkpoints_kept: int = Field(2, ge=1, description="Checkpoints kept in storage; older ones are deleted.")
    log_every: int = Field(10, ge=1, description="Steps between metric logs.")
    val_every: int = Field(0, ge=0, description="Steps between validations; 0 = only at the end.")
    num_val_per_task: int = Field(4, ge=1, description="Held-out pairs per task used for validation PSNR/SSIM.")
    val_split: Literal["val", "test"] | list[Literal["val", "test"]] = Field(
        "val",
        description="Held-out split(s) the validation pairs come from; a list pools them (for datasets with "
        "few held-out source images, such as the built-in set).",
    )
    val_num_steps: int | None = Field(None, ge=1, description="Sampler steps in validation; None = model.num_steps.")
    max_failures: int = Field(1, ge=0, description="Worker-group restarts from the latest checkpoint before the run fails.")
    run_name: str | None = Field(
        None, description="Ray Train run name; re-running under the same name resumes. None = '<preset>-<stage>'."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "StageConfig":
        if self.batch_size % (self.micro_batch_size * self.num_workers):
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} "
                f"× num_workers {self.num_workers}"
            )
        if self.use_gpu and self.grad_accumulation > 1 and self.zero_stage < 2:
            raise ValueError(
                f"zero_stage {self.zero_stage} on GPU with {self.grad_accumulation} micro-batches a step would sum "
                "their gradients in bf16 (DeepSpeed sums in fp32 only under ZeRO-2/3 here); use zero_stage 2, or "
                "micro_batch_size × num_workers = batch_size"
            )
        if self.ema_decay is not None and self.zero_stage == 3:
            raise ValueError("ema_decay needs zero_stage <= 2: ZeRO-3 never holds whole weights on one worker")
        if self.compile and self.zero_stage == 3:
            raise ValueError("compile needs zero_stage <= 2: ZeRO-3 gathers each block's weights in module hooks "
                             "that a compiled block would not run as written")
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be below steps {self.steps}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds {self.kinds} repeats a kind")
        return self

    @property
    def grad_accumulation(self) -> int:
        """Micro-batches each worker accumulates per optimizer step."""
        return self.batch_size // (self.micro_batch_size * self.num_workers)

    @property
    def mixes(self) -> bool:
        """Whether the stage mixes synthetic pairs with real or proxy ones (through `data.mixing`)."""
        return "synthetic" in self.kinds and len(self.kinds) > 1


class TrainConfig(BaseModel):
    """Both training stages; the trainer is the same, only these values differ."""

    model_config = ConfigDict(extra="forbid")

    stage1: StageConfig = Field(
        default_factory=lambda: StageConfig(schedule="constant", warmup_steps=20),
        description="Transfer training: synthetic pairs only, constant LR after warmup.",
    )
    stage2: StageConfig = Field(
        default_factory=lambda: StageConfig(init_from="stage1", schedule="cosine", kinds=["synthetic", "proxy"], warmup_steps=10),
        description="SFT: starts from stage 1, cosine LR, synthetic pairs mixed with real or proxy ones per data.mixing.",
    )

    def stage(self, name: str) -> StageConfig:
        """The config of stage `name` ('stage1' or 'stage2')."""
        if name not in STAGES:
            raise ValueError(f"unknown training stage {name!r}; choose one of {', '.join(STAGES)}")
        return getattr(self, name)
