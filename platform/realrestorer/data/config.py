"""The `data` section of the config tree: sources, synthesis, filters, output, mixing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from realrestorer.degrade import TASKS

SPLITS = ("train", "val", "test")
KINDS = ("synthetic", "real", "proxy")
QUALITY_METRICS = ("piqe", "musiq", "clipiqa", "topiq_nr", "maniqa", "niqe", "brisque", "nima")


class FilterConfig(BaseModel):
    """Which pairs are kept; every score is recorded in the shard whatever the decision."""

    model_config = ConfigDict(extra="forbid")

    quality_metrics: list[str] = Field(
        default_factory=lambda: ["piqe"],
        description="pyiqa no-reference metrics scored on clean images (see quality_scope). 'piqe' needs no weights; the others load "
        "from `quality_weights_dir` and are reported unavailable when their weights are not there.",
    )
    quality_weights_dir: str | None = Field(
        None, description="Local folder holding pyiqa weight files (named as pyiqa names them, e.g. musiq_koniq_*.pth)."
    )
    quality_scope: Literal["source", "crop"] = Field(
        "source",
        description="What the quality metrics score: 'source' = each clean image once (resized, before cropping; "
        "a rejection drops all its crops), 'crop' = every clean crop (crops_per_image times the cost).",
    )
    piqe_max: float | None = Field(
        80.0, ge=0.0, le=100.0, description="Reject clean crops with PIQE above this (PIQE: lower is better); None keeps all."
    )
    psnr_max: dict[str, float] = Field(
        default_factory=lambda: {task: 40.0 for task in TASKS},
        description="Per-task PSNR (dB) a pair must stay below, so the degradation is strong enough; "
        "tasks not listed use `psnr_max_default`.",
    )
    psnr_max_default: float = Field(40.0, description="PSNR ceiling (dB) for tasks missing from `psnr_max` (mixed, web).")
    gradient_ssim_min: float = Field(
        0.05, ge=-1.0, le=1.0, description="Reject pairs whose gradient structure similarity falls below this (destroyed)."
    )
    max_shift_px: float = Field(0.5, gt=0.0, description="Reject pairs whose phase-correlation shift exceeds this (pixels).")
    min_align_response: float = Field(
        0.3, ge=0.0, le=1.0, description="Phase-correlation peaks below this find no common structure: the shift is not trusted."
    )
    align_side: int = Field(256, ge=32, description="Longest side the pair is downscaled to before phase correlation.")
    dedup_max_distance: int = Field(
        4, ge=0, le=16, description="Source images whose 64-bit perceptual hashes differ in at most this many bits are duplicates."
    )

    @field_validator("quality_metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(QUALITY_METRICS))
        if unknown:
            raise ValueError(f"unknown quality metrics {unknown}; choose from {', '.join(QUALITY_METRICS)}")
        return value

    @field_validator("psnr_max")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TASKS) - {"mixed", "web"})
        if unknown:
            raise ValueError(f"psnr_max names unknown tasks {unknown}")
        return value


class MixingConfig(BaseModel):
    """How stage 2 mixes synthetic pairs with real (or proxy) pairs, along the stage's planned steps.

    By default the synthetic share starts at `start_ratio` (1.0: stage 2 begins on
    stage 1's distribution) and follows a half cosine down to `final_ratio` over
    the first `decay_fraction` of the stage's steps, then holds. A cosine leaves
    the stage-1 mix gently and lands gently, as the cosine LR does. Positions are
    fractions of the stage's planned steps, so one setting fits every preset.
    """

    model_config = ConfigDict(extra="forbid")

    start_ratio: float = Field(1.0, ge=0.0, le=1.0, description="Synthetic share at the first step of stage 2.")
    final_ratio: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Synthetic share once the decay is over, held to the end; the rest is real or proxy. "
        "This is the ratio Ray Tune sweeps.",
    )
    decay_fraction: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Share of the stage's planned steps over which the synthetic share decays (cosine) from "
        "`start_ratio` to `final_ratio`; 0 = `final_ratio` from the first step (a fixed mix).",
    )
    schedule: list[tuple[float, float]] | None = Field(
        None,
        description="Explicit progressive mixing: [[fraction of the stage's steps, synthetic share], ...], linearly "
        "interpolated and held past its ends; overrides start_ratio, final_ratio and decay_fraction when set.",
    )
    web_augment_prob: float = Field(
        0.3, ge=0.0, le=1.0, description="Probability that an input gets a web re-encoding chain applied on the fly."
    )

    @field_validator("schedule")
    @classmethod
    def _schedule_sorted(cls, value: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("needs at least one [fraction, ratio] point, or null")
        fractions = [fraction for fraction, _ in value]
        if not all(0.0 <= fraction <= 1.0 for fraction in fractions):
            raise ValueError("positions are fractions of the stage's planned steps: they must lie in [0, 1]")
        if fractions != sorted(fractions) or len(set(fractions)) != len(fractions):
            raise ValueError("positions must be strictly increasing")
        if not all(0.0 <= ratio <= 1.0 for _, ratio in value):
            raise ValueError("ratios must lie in [0, 1]")
        return value


class DataConfig(BaseModel):
    """What the dataset builder reads, makes and writes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("pairs", min_length=1, description="Dataset name; shards go to <storage.root>/datasets/<name> unless `output` is set.")
    output: str | None = Field(None, description="URI of the dataset folder; None derives it from storage.root and name.")
    clean_source: str | None = Field(
        None, description="Folder, glob or s3:// prefix of clean images; None uses the built-in photos (data.sources.BUILTIN_PHOTOS)."
    )
    real_source: str | None = Field(
        None,
        description="Real degraded images: a folder laid out <task>/degraded/* (+ optional <task>/reference/* with the "
        "same names), or a .jsonl manifest of {degraded, reference?, task}; None builds the proxy set instead.",
    )
    build_proxy: bool = Field(True, description="Without a real source, build a kind=proxy set (mixed chain, then web re-encoding).")
    resolution: int = Field(64, ge=16, description="Side of the square crops (pixels).")
    crops_per_image: int = Field(4, ge=1, description="Random crops taken from each clean image.")
    resize_short_side: int | None = Field(
        None, description="Images whose short side exceeds this are first resized to it (aspect kept); None = 2 × resolution."
    )
    crop_scale_max: float = Field(
        1.0, ge=1.0,
        description="Multi-scale crops: each crop's window is resolution × s pixels, s log-uniform in [1, this], "
        "then resized down to resolution; 1 cuts every crop at the image's own scale.",
    )
    min_side: int | None = Field(None, description="Images with a shorter side are skipped as too small; None = resolution.")
    max_pixels: int = Field(
        100_000_000, ge=1, description="Images whose header claims more pixels are skipped unread (decompression bombs)."
    )
    max_file_bytes: int = Field(200 * 2**20, ge=1, description="Files larger than this are skipped unread.")
    task_weights: dict[str, float] = Field(
        default_factory=lambda: {task: 1.0 for task in TASKS},
        description="Relative sampling weight of each of the nine tasks (missing tasks get 0).",
    )
    mixed_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of synthetic pairs degraded by the `mixed` chain.")
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="Fraction of source images per split; sources never cross splits.",
    )
    degraded_format: str = Field("png", description="Encoding of degraded images: 'png' (lossless) or 'jpeg'.")
    jpeg_quality: int = Field(97, ge=95, le=100, description="JPEG quality when degraded_format is 'jpeg'.")
    images_per_shard: int = Field(8, ge=1, description="Source images per shard (one shard is one unit of work and of resume).")
    max_crops_per_shard: int = Field(
        64, ge=1,
        description="At most this many crops per shard: more are cut into further shards, splitting a source's "
        "crops where needed, so a few large sources still spread over many workers.",
    )
    num_workers: int | None = Field(None, ge=1, description="Size of the CPU actor pool; None = all CPUs Ray has.")
    teacher: str = Field(
        "nlmeans",
        description="Restorer that makes references for real images that have none: 'nlmeans' (OpenCV non-local "
        "means) or 'module:function' taking an H×W×3 uint8 image and returning one.",
    )
    vlm_path: str | None = Field(
        None,
        description="Local folder or s3:// URI of a Qwen2.5-VL checkpoint (transformers format) that judges the degradation "
        "type and severity of each pair of `vlm_kinds`; None skips the check.",
    )
    vlm_kinds: list[Literal["synthetic", "real", "proxy"]] = Field(
        default_factory=lambda: ["real", "proxy"],
        description="Kinds of pairs the VLM judges (synthetic, real, proxy); synthetic pairs carry their exact "
        "degradation in params, so checking them measures the judge more than the data.",
    )
    vlm_reject_mismatch: bool = Field(
        False,
        description="Reject checked pairs whose predicted task differs from their label (rejection reason "
        "`vlm_mismatch`); otherwise the verdict is only recorded.",
    )
    filters: FilterConfig = Field(default_factory=FilterConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)

    @field_validator("task_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"task_weights names unknown tasks {unknown}; the nine are {', '.join(TASKS)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("task_weights must be non-negative with a positive sum")
        return value

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown splits {unknown}; use {', '.join(SPLITS)}")
        if any(f < 0 for f in value.values()) or abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {value}")
        return value

    @field_validator("degraded_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("png", "jpeg"):
            raise ValueError(f"degraded_format must be 'png' or 'jpeg', got {value!r}")
        return value

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, value: str) -> str:
        if value != "nlmeans" and value.count(":") != 1:
            raise ValueError(f"teacher must be 'nlmeans' or 'module:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> DataConfig:
        if self.resize_short_side is not None and self.resize_short_side < self.resolution:
            raise ValueError(f"data.resize_short_side ({self.resize_short_side}) is below data.resolution ({self.resolution})")
        return self

    @property
    def short_side(self) -> int:
        return self.resize_short_side or 2 * self.resolution

    @property
    def smallest_side(self) -> int:
        return self.min_side or self.resolution
