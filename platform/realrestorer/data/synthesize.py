"""One shard of pairs: load sources, crop, degrade (or take real pairs), score, filter, write.

Everything random about a sample comes from a generator seeded by the sample's
identity (master seed, kind, source URI, crop index), so a shard's content does
not depend on which worker builds it, in which order, or how often.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from realrestorer import storage
from realrestorer.config import PipelineConfig
from realrestorer.data import filters, shards
from realrestorer.data.config import DataConfig
from realrestorer.data.layers import ReflectionLayers, record_layer
from realrestorer.data.sources import cut_crop, load_image, random_crop, resize_short_side
from realrestorer.data.teacher import Teacher, run_teacher
from realrestorer.data.vlm import DegradationJudge, check_pairs
from realrestorer.degrade import TASKS, degrade


def sample_seed(seed: int, kind: str, source_uri: str, crop_index: int) -> int:
    """A 63-bit seed from the identity of a sample."""
    return int(shards.pair_id(seed, kind, source_uri, crop_index), 16) & (2**63 - 1)


def sample_task(rng: np.random.Generator, cfg: DataConfig) -> str:
    """`mixed` with probability `mixed_share`, else one of the nine by `task_weights`."""
    if rng.random() < cfg.mixed_share:
        return "mixed"
    names = [task for task in TASKS if cfg.task_weights.get(task, 0.0) > 0]
    weights = np.array([cfg.task_weights[task] for task in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def prompt_for(task: str, params: dict[str, Any]) -> str:
    """The fixed prompt; a mixture uses the prompt of its most severe step."""
    if task == "mixed":
        strongest = max(params["steps"], key=lambda step: step["severity"])
        return TASKS[strongest["task"]]
    return TASKS[task]


def done_uri(output: str, split: str, kind: str, index: int) -> str:
    """The marker written once shard (split, kind, index) is complete; it holds the shard's stats."""
    return storage.join(output, "_done", f"{split}-{kind}-{index:05d}.json")


class ShardBuilder:
    """Builds whole shards; one per actor, holding the quality metrics, the teacher and the VLM judge."""

    def __init__(self, cfg: PipelineConfig, output: str, scorer: filters.QualityScorer, teacher: Teacher | None,
                 judge: DegradationJudge | None = None):
        self.cfg, self.data, self.output = cfg, cfg.data, output
        self.scorer, self.teacher, self.judge = scorer, teacher, judge
        # The default prior lives inside the engine; only a configured depth network is passed as context.
        self.context: dict[str, Any] = {}
        if cfg.degrade.haze_depth != "prior":
            from realrestorer.degrade.depth import provider

            self.context["depth"] = provider(cfg.degrade.haze_depth)
        # Loaded once per actor; each reflection (or mixed) sample picks one with its own generator.
        self.layers = None
        if cfg.degrade.reflection_layers is not None:
            self.layers = ReflectionLayers(cfg.degrade.reflection_layers, cfg.data, cfg.storage)

    def _context(self, task: str, rng: np.random.Generator) -> tuple[dict[str, Any], str | None]:
        """What `task` renders with, and the URI of the reflection layer drawn for it (None when none is)."""
        context = dict(self.context) if task in ("haze", "mixed") else {}
        if self.layers is None or task not in ("reflection", "mixed"):
            return context, None
        uri, context["reflection"] = self.layers.pick(rng)
        return context, uri

    def _pair(self, clean: np.ndarray, degraded: np.ndarray, task: str, quality: dict[str, float],
              rejections: Counter, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        scores = {**quality, **filters.pair_scores(clean, degraded, self.data.filters, params)}
        reason = filters.pair_rejection(scores, task, self.data.filters)
        if reason:
            rejections[reason] += 1
            return None
        return {
            "clean": shards.encode_image(clean),
            "degraded": shards.encode_image(degraded, self.data.degraded_format, self.data.jpeg_quality),
            "scores": {k: (None if not np.isfinite(v) else v) for k, v in scores.items()},
        }

    def _quality(self, clean: np.ndarray, rejections: Counter) -> dict[str, float] | None:
        quality = self.scorer(clean)
        reason = self.scorer.rejection(quality)
        if reason:
            rejections[reason] += 1
            return None
        return quality

    def _source_quality(self, image: np.ndarray, rejections: Counter) -> dict[str, float] | None:
        """The clean source's scores when `quality_scope` is 'source' (one rejection for all its crops); else {}."""
        return self._quality(image, rejections) if self.data.filters.quality_scope == "source" else {}

    def _crop_quality(self, clean: np.ndarray, source_quality: dict[str, float],
                      rejections: Counter) -> dict[str, float] | None:
        """The scores a crop's row records: its own when `quality_scope` is 'crop', else its source's."""
        return self._quality(clean, rejections) if self.data.filters.quality_scope == "crop" else source_quality

    def _synthetic(self, uri: str, crops: range, split: str, kind: str, rejections: Counter) -> list[dict[str, Any]]:
        # What rejects the whole source is counted once, by the unit that holds its first crop.
        source_rejections = rejections if crops.start == 0 else Counter()
        image, reason = load_image(uri, self.data, self.cfg.storage)
        if reason:
            source_rejections[reason] += 1
            return []
        image = resize_short_side(image, self.data.short_side)
        source_quality = self._source_quality(image, source_rejections)
        if source_quality is None:
            return []
        rows = []
        for crop_index in crops:
            seed = sample_seed(self.cfg.seed, kind, uri, crop_index)
            rng = np.random.default_rng(seed)
            crop = random_crop(image.shape, self.data.resolution, rng, self.data.crop_scale_max)
            clean = cut_crop(image, crop, self.data.resolution)
            quality = self._crop_quality(clean, source_quality, rejections)
            if quality is None:
                continue
            severity = float(rng.uniform(self.cfg.degrade.severity_min, self.cfg.degrade.severity_max))
            if kind == "proxy":
                # The held-out stand-in for real data: a physical mixture, then a trip round the web.
                context, layer_uri = self._context("mixed", rng)
                mixed, mixed_params = degrade("mixed", clean, rng, severity, **context)
                degraded, web_params = degrade("web", mixed, rng, float(rng.uniform(0.0, 1.0)))
                task, params = "mixed", {"chain": [mixed_params, web_params]}
                prompt = prompt_for("mixed", mixed_params)
            else:
                task = sample_task(rng, self.data)
                context, layer_uri = self._context(task, rng)
                degraded, params = degrade(task, clean, rng, severity, **context)
                prompt = prompt_for(task, params)
            if layer_uri is not None:
                record_layer(params, layer_uri)
            pair = self._pair(clean, degraded, task, quality, rejections, params)
            if pair is not None:
                rows.append({**pair, "id": shards.pair_id(seed, task), "split": split, "kind": kind, "task": task,
                             "prompt": prompt, "source_uri": uri, "crop": crop, "seed": seed, "params": params,
                             "width": clean.shape[1], "height": clean.shape[0]})
        return rows

    def _real(self, item: dict[str, Any], crops: range, split: str, rejections: Counter) -> list[dict[str, Any]]:
        source_rejections = rejections if crops.start == 0 else Counter()
        degraded_full, reason = load_image(item["degraded"], self.data, self.cfg.storage)
        reference_full = None
        if not reason and item["reference"] is not None:
            reference_full, reason = load_image(item["reference"], self.data, self.cfg.storage)
            if not reason and reference_full.shape != degraded_full.shape:
                reason = "size_mismatch"
        if reason:
            source_rejections[reason] += 1
            return []
        degraded_full = resize_short_side(degraded_full, self.data.short_side)
        if reference_full is None:
            reference_full, origin = run_teacher(self.teacher, degraded_full), f"teacher:{self.data.teacher}"
        else:
            reference_full, origin = resize_short_side(reference_full, self.data.short_side), item["reference"]
        source_quality = self._source_quality(reference_full, source_rejections)
        if source_quality is None:
            return []
        rows = []
        for crop_index in crops:
            seed = sample_seed(self.cfg.seed, "real", item["degraded"], crop_index)
            x, y, w, h = crop = random_crop(degraded_full.shape, self.data.resolution, np.random.default_rng(seed))
            clean = np.ascontiguousarray(reference_full[y:y + h, x:x + w])
            degraded = np.ascontiguousarray(degraded_full[y:y + h, x:x + w])
            quality = self._crop_quality(clean, source_quality, rejections)
            if quality is None:
                continue
            pair = self._pair(clean, degraded, item["task"], quality, rejections)
            if pair is not None:
                rows.append({**pair, "id": shards.pair_id(seed, item["task"]), "split": split, "kind": "real",
                             "task": item["task"], "source_uri": item["degraded"], "crop": crop, "seed": seed,
                             "params": {"reference": origin}, "width": w, "height": h})
        return rows

    def build(self, shard: dict[str, Any]) -> dict[str, Any]:
        """Make, write and mark one shard; return its stats.

        `shard` is a plan entry (`build.plan_shards`): split, kind, index and items, each item a source (a URI,
        or a real item's dict) with the `[start, stop)` range of its crops that this shard makes.
        """
        start = time.perf_counter()
        split, kind, index = shard["split"], shard["kind"], shard["index"]
        rejections: Counter = Counter()
        rows: list[dict[str, Any]] = []
        for item in shard["items"]:
            source, crops = item["source"], range(*item["crops"])
            rows += (self._real(source, crops, split, rejections) if kind == "real"
                     else self._synthetic(source, crops, split, kind, rejections))
        vlm = None
        if self.judge is not None:
            rows, vlm = check_pairs(self.judge, rows, self.data, rejections)
        target = storage.join(self.output, shards.shard_name(split, kind, index))
        if rows:
            shards.write_pairs(rows, self.output, self.cfg.storage, index=index)
        else:
            shards.write_table(shards.SCHEMA.empty_table(), target, self.cfg.storage)
        stats = {
            "shard": shards.shard_name(split, kind, index),
            "items": shard["items"],  # what the shard holds: resume rebuilds it when the plan gives it others
            "num_pairs": len(rows),
            "counts": dict(Counter(f"{split}/{kind}/{row['task']}" for row in rows)),
            "rejections": dict(rejections),
            "seconds": time.perf_counter() - start,
            "finished_at": time.time(),  # wall clock, so a run's busy window can be measured across workers
            "vlm": vlm,
            "unavailable_metrics": dict(self.scorer.unavailable),
        }
        # The marker goes last: a shard without it is rebuilt on resume.
        storage.write_bytes(done_uri(self.output, split, kind, index), json.dumps(stats).encode(), self.cfg.storage)
        return stats


__all__ = ["ShardBuilder", "done_uri", "prompt_for", "sample_seed", "sample_task"]
