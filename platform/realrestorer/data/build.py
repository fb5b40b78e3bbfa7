"""The dataset builder on Ray Data: scan → dedup → split → shards (CPU actor pool) → manifest.

`build_dataset(cfg)` is the one entry point. Work is planned as shards (a fixed
list of source images each) so that a shard is the unit of parallelism, of
determinism and of resume: a shard whose `_done` marker exists is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from importlib.metadata import version
from typing import Any

import numpy as np

from realrestorer import storage, tracking
from realrestorer.config import PipelineConfig
from realrestorer.data import filters, shards, vlm
from realrestorer.data.config import DataConfig
from realrestorer.data.layers import ReflectionLayers
from realrestorer.data.sources import assign_splits, list_clean, list_real, load_image
from realrestorer.data.report import format_vlm_check
from realrestorer.data.synthesize import ShardBuilder, done_uri

log = logging.getLogger(__name__)


def output_uri(cfg: PipelineConfig) -> str:
    """Where the dataset goes: `data.output`, else `<storage.root>/datasets/<data.name>`."""
    return cfg.data.output or storage.join(cfg.storage.root, "datasets", cfg.data.name)


def _scan_batch(batch: dict[str, np.ndarray], cfg_json: str) -> dict[str, np.ndarray]:
    # Validate each clean source and hash it for near-duplicate removal.
    cfg = PipelineConfig.model_validate_json(cfg_json)
    status, hashes = [], []
    for uri in batch["source_uri"]:
        image, reason = load_image(str(uri), cfg.data, cfg.storage)
        status.append(reason or "ok")
        hashes.append(0 if image is None else filters.phash(image))
    return {"source_uri": batch["source_uri"], "status": np.array(status), "phash": np.array(hashes, dtype=np.uint64)}


class ShardWorker:
    """One per CPU: loads the quality metrics, the teacher and the VLM judge once, then builds shards.

    A Ray Data actor here (`__call__` takes a batch of shard plans); benchmarks/stage1_quality.py runs one per
    process of a pool on a machine without Ray (`builder.build`).
    """

    def __init__(self, cfg_json: str, output: str, needs_teacher: bool, needs_judge: bool):
        import cv2

        from realrestorer.data.teacher import load_teacher

        cv2.setNumThreads(1)  # one actor per CPU already; more threads only oversubscribe
        cfg = PipelineConfig.model_validate_json(cfg_json)
        self.scorer = filters.QualityScorer(cfg.data.filters)
        teacher = load_teacher(cfg.data.teacher) if needs_teacher else None
        judge = vlm.DegradationJudge(cfg.data.vlm_path) if needs_judge else None
        self.builder = ShardBuilder(cfg, output, self.scorer, teacher, judge)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = []
        for shard_json in batch["shard"]:
            stats.append(json.dumps(self.builder.build(json.loads(str(shard_json)))))
        return {"stats": np.array(stats, dtype=object)}


def plan_shards(items_by_split: dict[str, list[Any]], kind: str, data: DataConfig) -> list[dict[str, Any]]:
    """Cut each split's sorted sources into shards of `images_per_shard` sources and at most `max_crops_per_shard` crops.

    Each shard item is `{"source": item, "crops": [start, stop]}`. A group of sources with more crops than
    the cap is cut into consecutive runs of crops, splitting a source across shards where a run ends inside
    it, so a few large sources still make many units of work. The plan depends on the config alone.
    """
    cap = data.max_crops_per_shard
    plan = []
    for split, items in sorted(items_by_split.items()):
        index = 0
        for start in range(0, len(items), data.images_per_shard):
            group = items[start:start + data.images_per_shard]
            run: list[dict[str, Any]] = []
            used = 0
            for item in group:
                first = 0
                while first < data.crops_per_image:
                    stop = min(data.crops_per_image, first + cap - used)
                    run.append({"source": item, "crops": [first, stop]})
                    used += stop - first
                    first = stop
                    if used == cap:
                        plan.append({"split": split, "kind": kind, "index": index, "items": run})
                        index, run, used = index + 1, [], 0
            if run:
                plan.append({"split": split, "kind": kind, "index": index, "items": run})
                index += 1
    return plan


# Up to this many sources are scanned in the driver: a Ray Data job costs seconds to start, more than loading a few images.
SCAN_IN_DRIVER_MAX = 32


def _scan(cfg: PipelineConfig, uris: list[str], num_workers: int) -> tuple[list[str], Counter]:
    rejections: Counter = Counter()
    cfg_json = cfg.model_dump_json()
    if len(uris) <= SCAN_IN_DRIVER_MAX:
        batch = _scan_batch({"source_uri": np.array(uris)}, cfg_json)
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    else:
        import ray.data

        ds = ray.data.from_items([{"source_uri": u} for u in uris], override_num_blocks=min(len(uris), 4 * num_workers))
        rows = ds.map_batches(
            _scan_batch, fn_kwargs={"cfg_json": cfg_json}, batch_size=16,
            compute=ray.data.TaskPoolStrategy(size=num_workers), num_cpus=1,
        ).take_all()
    rows.sort(key=lambda r: r["source_uri"])
    valid = [r for r in rows if r["status"] == "ok"]
    rejections.update(r["status"] for r in rows if r["status"] != "ok")
    duplicate = filters.near_duplicates([int(r["phash"]) for r in valid], cfg.data.filters.dedup_max_distance)
    rejections["near_duplicate"] += int(duplicate.sum())
    return [r["source_uri"] for r, dup in zip(valid, duplicate) if not dup], rejections


def plan_dataset(cfg: PipelineConfig, num_workers: int) -> tuple[list[dict[str, Any]], Counter, int]:
    """(shards to build, sources rejected by the scan, source count): the whole plan of `cfg`'s dataset.

    Scans up to `SCAN_IN_DRIVER_MAX` sources in this process, more on Ray Data with `num_workers` tasks.
    """
    data = cfg.data
    uris = list_clean(data.clean_source, cfg.storage)
    if not uris:
        raise ValueError(f"data.clean_source={data.clean_source!r} holds no files")
    sources, rejections = _scan(cfg, uris, num_workers)
    by_split: dict[str, list[str]] = {}
    for uri, split in assign_splits(sources, cfg.seed, data.splits).items():
        by_split.setdefault(split, []).append(uri)
    plan = plan_shards(by_split, "synthetic", data)
    if data.real_source is not None:
        real_by_split: dict[str, list[dict]] = {}
        items = sorted(list_real(data.real_source, cfg.storage), key=lambda i: i["degraded"])
        real_splits = assign_splits([item["degraded"] for item in items], cfg.seed, data.splits)
        for item in items:
            real_by_split.setdefault(real_splits[item["degraded"]], []).append(item)
        plan += plan_shards(real_by_split, "real", data)
    elif data.build_proxy:
        plan += plan_shards(by_split, "proxy", data)
    return plan, rejections, len(uris)


def _collect(output: str, cfg: PipelineConfig) -> list[dict[str, Any]]:
    fs, path = storage.filesystem(storage.join(output, "_done"), cfg.storage)
    return [json.loads(fs.cat_file(p)) for p in sorted(fs.glob(f"{path}/*.json"))]


def _name(shard: dict[str, Any]) -> str:
    return shards.shard_name(shard["split"], shard["kind"], shard["index"])


def pending_shards(plan: list[dict[str, Any]], output: str, cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The shards of `plan` that `output` lacks. A shard is complete when its marker names the very items the plan
    gives it; a marker left by another plan (another crop count or cap, older code) does not count."""
    markers = {m["shard"]: m for m in _collect(output, cfg)}
    return [s for s in plan if markers.get(_name(s), {}).get("items") != s["items"]]


def _remove_unplanned(output: str, cfg: PipelineConfig, planned: set[str]) -> int:
    """Delete the shard files (and their markers) not among the `planned` names; return how many there were."""
    fs, _ = storage.filesystem(output, cfg.storage)
    removed = 0
    for uri in shards.shard_uris(output, storage_cfg=cfg.storage):
        split, file = uri.rstrip("/").split("/")[-2:]
        if f"{split}/{file}" in planned:
            continue
        kind, index = file.removesuffix(".parquet").rsplit("-", 1)
        for stale in (done_uri(output, split, kind, int(index)), uri):
            if storage.exists(stale, cfg.storage):
                fs.rm(storage.filesystem(stale, cfg.storage)[1])
        removed += 1
    if removed:
        log.warning("removed %d shard(s) under %s that the current config does not plan", removed, output)
    return removed


def _run_shards(cfg: PipelineConfig, output: str, pending: list[dict[str, Any]], num_workers: int) -> None:
    import ray.data
    from tqdm import tqdm

    if not pending:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar, counted in shards, is ours
    ds = ray.data.from_items([{"shard": json.dumps(s)} for s in pending], override_num_blocks=len(pending))
    size = max(1, min(num_workers, len(pending)))
    results = ds.map_batches(
        ShardWorker, batch_size=1, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=size),
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "output": output,
                               "needs_teacher": any(s["kind"] == "real" for s in pending),
                               "needs_judge": cfg.data.vlm_path is not None
                               and any(s["kind"] in cfg.data.vlm_kinds for s in pending)},
    )
    with tqdm(total=len(pending), desc="shards", unit="shard") as bar:
        for row in results.iter_rows():
            stats = json.loads(row["stats"])
            bar.set_postfix(pairs=stats["num_pairs"])
            bar.update(1)


def _aggregate(stats: list[dict[str, Any]], scan_rejections: Counter) -> tuple[dict, dict, dict]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    rejections = Counter(scan_rejections)
    unavailable: dict[str, str] = {}
    for shard in stats:
        for key, n in shard["counts"].items():
            split, kind, task = key.split("/")
            bucket = counts.setdefault(split, {}).setdefault(kind, {})
            bucket[task] = bucket.get(task, 0) + n
        rejections.update(shard["rejections"])
        unavailable.update(shard.get("unavailable_metrics", {}))
    return counts, dict(sorted(rejections.items())), unavailable


def build_dataset(cfg: PipelineConfig) -> dict[str, Any]:
    """Build (or finish) the dataset described by `cfg`; write `manifest.json`; return the summary."""
    import ray

    if not ray.is_initialized():
        ray.init()
    # Every actor loads the layers itself; loading them here too fails a source with no usable image before
    # any work starts, and gives the manifest its skip counts.
    layers = None
    if cfg.degrade.reflection_layers is not None:
        layers = ReflectionLayers(cfg.degrade.reflection_layers, cfg.data, cfg.storage)
    if cfg.data.vlm_path is not None:
        vlm.check_checkpoint(cfg.data.vlm_path)
    elif cfg.data.vlm_reject_mismatch:
        log.warning("data.vlm_reject_mismatch is ignored: data.vlm_path is not set")
    start = time.perf_counter()
    output = output_uri(cfg)
    num_workers = cfg.data.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    plan, scan_rejections, num_sources = plan_dataset(cfg, num_workers)
    # Shards this plan does not name go.
    planned = {_name(s) for s in plan}
    pending = pending_shards(plan, output, cfg)
    removed = _remove_unplanned(output, cfg, planned)
    _run_shards(cfg, output, pending, num_workers)
    seconds = time.perf_counter() - start
    stats = [s for s in _collect(output, cfg) if s["shard"] in planned]
    counts, rejections, unavailable = _aggregate(stats, scan_rejections)
    built_now = {_name(s) for s in pending}
    pairs_now = sum(s["num_pairs"] for s in stats if s["shard"] in built_now)
    summary = {
        "output": output,
        "num_sources": num_sources,
        "num_pairs": sum(s["num_pairs"] for s in stats),
        "counts": counts,
        "rejections": rejections,
        "shards": {"total": len(plan), "built": len(pending), "skipped": len(plan) - len(pending), "removed": removed},
        "seconds": round(seconds, 3),
        "pairs_per_s": round(pairs_now / seconds, 3) if pending else None,
        "quality_metrics": {"used": [m for m in cfg.data.filters.quality_metrics if m not in unavailable],
                            "unavailable": unavailable},
        "reflection_layers": None if layers is None else layers.summary(),
        "vlm_check": "skipped: data.vlm_path is not set" if cfg.data.vlm_path is None
        else vlm.summarize(cfg.data, [s.get("vlm") for s in stats]),
    }
    manifest = {**summary, "format": "realrestorer-pairs", "version": 2, "code_version": version("realrestorer"),
                "config": cfg.model_dump(mode="json")}
    storage.write_bytes(storage.join(output, "manifest.json"), json.dumps(manifest, indent=2).encode(), cfg.storage)
    log.info(format_vlm_check(summary["vlm_check"]))
    with tracking.run(cfg, "synthesize") as active:
        if active is not None:
            _log_to_mlflow(summary, manifest, output, cfg)
    return summary


def _log_to_mlflow(summary: dict[str, Any], manifest: dict[str, Any], output: str, cfg: PipelineConfig) -> None:
    import mlflow

    from realrestorer.data.report import contact_sheet

    metrics = {"num_pairs": summary["num_pairs"], "num_sources": summary["num_sources"]}
    if summary["pairs_per_s"] is not None:
        metrics["pairs_per_s"] = summary["pairs_per_s"]
    for split, kinds in summary["counts"].items():
        for kind, tasks in kinds.items():
            metrics.update({f"pairs.{split}.{kind}.{task}": n for task, n in tasks.items()})
    metrics.update({f"rejected.{reason}": n for reason, n in summary["rejections"].items()})
    if isinstance(summary["vlm_check"], dict):
        check = summary["vlm_check"]
        metrics["vlm.num_checked"] = check["num_checked"]
        metrics.update({f"vlm.{name}": check[name] for name in ("agreement", "severity_agreement") if check[name] is not None})
    mlflow.log_metrics(metrics)
    mlflow.log_dict(manifest, "manifest.json")
    sheet = contact_sheet(output, cfg.storage)
    if sheet is not None:
        mlflow.log_image(sheet, "contact_sheet.png")


__all__ = ["ShardWorker", "build_dataset", "output_uri", "pending_shards", "plan_dataset", "plan_shards"]
