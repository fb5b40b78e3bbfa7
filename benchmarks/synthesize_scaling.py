"""Dataset builder scaling: end-to-end pairs/s at 256² and 512² with 1 and 2 CPUs, against the bare engine.

For each size, the same clean crops are processed three ways:
- `engine`: `degrade` alone in this process, one thread (the bare engine);
- `builder, no Ray`: a `ShardBuilder` in this process, one thread (engine + filters
  + PNG encode + Parquet write: the builder's own work per pair);
- the builder on a local Ray with 1 and 2 workers, timed end to end (scan,
  actor start-up, shards, manifest).

Speed-up from 1 to 2 CPUs is given end to end (Ray start-up and actor start-up
included, so small runs understate it) and over the busy window (first shard start
to last shard end). Per-core efficiency is the Ray builder's steady-state pairs/s
per worker (the shard time its actors report) over the single-thread
`builder, no Ray` figure (the Ray overhead) and over the bare engine (which does
no filtering, scoring or encoding). Prints a table, then one JSON line.

    python benchmarks/synthesize_scaling.py [--sizes 256 512] [--crops 256 128]

The default crop counts give each run about a minute of single-CPU work (81 s
and 59 s end to end on the 2-core CI machine), so the fixed start-up (Ray Data's
executor, actors importing torch and pyiqa: 7-9 s) is a smaller part of the
end-to-end figure, as it is in a real build.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGETS = {"speedup_2_cpus": 1.7, "per_core_vs_engine": 0.7}


def _config(size: int, crops: int, output: str, workers: int, quality: list[str]):
    from realrestorer.config import load_config

    return load_config("tiny", [
        f"data.resolution={size}", f"data.crops_per_image={crops}", "data.images_per_shard=1",
        "data.resize_short_side=null", "data.crop_scale_max=1",  # crops at one scale, on sources 2 × size
        "data.build_proxy=false", f"data.output={output}", f"data.num_workers={workers}",
        f"data.filters.quality_metrics={json.dumps(quality)}", "data.splits={train: 1.0}",
    ])


def _engine(cfg) -> tuple[float, int]:
    """pairs/s of the bare engine (process CPU time) on the builder's crops."""
    import numpy as np
    from realrestorer.data.sources import (
        cut_crop,
        list_clean,
        load_image,
        random_crop,
        resize_short_side,
    )
    from realrestorer.data.synthesize import sample_seed, sample_task
    from realrestorer.degrade import degrade

    crops = []
    for uri in list_clean(None):
        image, reason = load_image(uri, cfg.data)
        if reason:
            continue
        image = resize_short_side(image, cfg.data.short_side)
        for index in range(cfg.data.crops_per_image):
            rng = np.random.default_rng(sample_seed(cfg.seed, "synthetic", uri, index))
            crop = random_crop(image.shape, cfg.data.resolution, rng, cfg.data.crop_scale_max)
            crops.append((cut_crop(image, crop, cfg.data.resolution), rng))
    start = time.process_time()
    for clean, rng in crops:
        degrade(sample_task(rng, cfg.data), clean, rng, float(rng.uniform(0.0, 1.0)))
    return len(crops) / (time.process_time() - start), len(crops)


def _builder_no_ray(cfg) -> float:
    """pairs/s of the builder's per-shard work in this process (process CPU time)."""
    from realrestorer.data.filters import QualityScorer
    from realrestorer.data.sources import list_clean, load_image
    from realrestorer.data.synthesize import ShardBuilder

    builder = ShardBuilder(cfg, cfg.data.output, QualityScorer(cfg.data.filters), None)
    sources = [u for u in list_clean(None) if load_image(u, cfg.data)[1] is None]
    start, pairs = time.process_time(), 0
    for index, uri in enumerate(sources):
        pairs += builder.build({"split": "train", "kind": "synthetic", "index": index, "items": [{"source": uri, "crops": [0, cfg.data.crops_per_image]}]})["num_pairs"]
    return pairs / (time.process_time() - start)


def _builder_ray(cfg) -> dict:
    from realrestorer.data.build import _collect, build_dataset

    start = time.perf_counter()
    summary = build_dataset(cfg)
    wall = time.perf_counter() - start
    stats = _collect(summary["output"], cfg)
    # The busy window: from the first shard's start to the last shard's end, over all workers.
    window = max(s["finished_at"] for s in stats) - min(s["finished_at"] - s["seconds"] for s in stats)
    return {
        "pairs": summary["num_pairs"],
        "wall_s": round(wall, 2),
        "end_to_end_pairs_per_s": summary["num_pairs"] / wall,
        "window_pairs_per_s": summary["num_pairs"] / window,
        "per_worker_pairs_per_s": sum(s["num_pairs"] for s in stats) / sum(s["seconds"] for s in stats),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--crops", type=int, nargs="+", default=[256, 128],
                        help="crops per built-in photo, one value per size (the last repeats)")
    parser.add_argument("--quality", nargs="*", default=["piqe"], help="pyiqa metrics scored on clean crops")
    args = parser.parse_args()

    import cv2
    import ray

    cv2.setNumThreads(1)
    ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, logging_level="ERROR")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, size in enumerate(args.sizes):
            crops = args.crops[min(index, len(args.crops) - 1)]
            base = _config(size, crops, f"{tmp}/local-{size}", 1, args.quality)
            engine, num_crops = _engine(base)
            local = _builder_no_ray(base)
            row = {"crops": num_crops, "engine_pairs_per_s": engine, "builder_no_ray_pairs_per_s": local}
            for workers in (1, 2):
                row[f"cpus_{workers}"] = _builder_ray(_config(size, crops, f"{tmp}/ray-{size}-{workers}", workers, args.quality))
            row["speedup_2_cpus"] = row["cpus_2"]["end_to_end_pairs_per_s"] / row["cpus_1"]["end_to_end_pairs_per_s"]
            row["speedup_2_cpus_window"] = row["cpus_2"]["window_pairs_per_s"] / row["cpus_1"]["window_pairs_per_s"]
            per_core = row["cpus_2"]["per_worker_pairs_per_s"]
            row["per_core_vs_engine"] = per_core / engine
            row["per_core_vs_builder_no_ray"] = per_core / local
            results[size] = row
    ray.shutdown()

    header = (f"{'size':>5} {'engine':>8} {'no Ray':>8} {'1 CPU e2e':>10} {'2 CPU e2e':>10} {'speedup':>8} "
              f"{'1 CPU win':>10} {'2 CPU win':>10} {'speedup':>8} {'per core':>9} {'vs engine':>10} {'vs no Ray':>10}")
    print(header)
    print("-" * len(header))
    for size, r in results.items():
        print(f"{size:>5} {r['engine_pairs_per_s']:>8.1f} {r['builder_no_ray_pairs_per_s']:>8.1f} "
              f"{r['cpus_1']['end_to_end_pairs_per_s']:>10.2f} {r['cpus_2']['end_to_end_pairs_per_s']:>10.2f} "
              f"{r['speedup_2_cpus']:>8.2f} {r['cpus_1']['window_pairs_per_s']:>10.2f} "
              f"{r['cpus_2']['window_pairs_per_s']:>10.2f} {r['speedup_2_cpus_window']:>8.2f} "
              f"{r['cpus_2']['per_worker_pairs_per_s']:>9.1f} "
              f"{r['per_core_vs_engine']:>10.2f} {r['per_core_vs_builder_no_ray']:>10.2f}")
    print("pairs/s; e2e = end to end on Ray (start of the scan to the manifest, actor start-up included); "
          "win = the busy window (first shard start to last shard end); per core = steady-state pairs/s per Ray "
          "worker, against the bare engine and against the same builder work without Ray; "
          "targets: speedup >= 1.7, per core >= 0.7 × engine")
    print(json.dumps({"benchmark": "synthesize_scaling", "targets": TARGETS, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
