"""Stage-1 quality after a fixed training time on one device, without Ray.

For a machine with PyTorch but no Ray (the lent GPU box; see benchmarks/device/).
jobs/train.py is the product path; this measures the same model and recipe there:

  data      the preset's synthetic pairs, built by the dataset builder's own
            shard code (`ShardBuilder`, the same seeded pairs) in a process pool
            instead of Ray Data; an existing folder of shards is reused
  training  stage 1's DiT on the trainer's DeepSpeed engine (its ZeRO stage,
            precision, AdamW, clipping, compile and EMA settings), LR schedule,
            augmentation and per-micro-batch seeds, on one process, for
            `--minutes` of wall time (first-step compile included) or the
            stage's steps, whichever ends first; epochs of the training pairs
            in a seeded order
  scores    as the trainer validates: the same held-out pairs per task, sampler
            steps, PSNR and SSIM, against the identity baseline

Without pyiqa (absent on the GPU box) the pairs are built without the PIQE
filter, which rejects none of the built-in crops at the small preset. Prints
progress, the per-task table, then one JSON line.

    python benchmarks/stage1_quality.py --preset small --minutes 8 --data /tmp/pairs
    python benchmarks/stage1_quality.py --preset tiny --minutes 3    # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

_BUILDER = None


def _start_builder(cfg_json: str, output: str) -> None:
    from realrestorer.data.build import ShardWorker

    global _BUILDER
    _BUILDER = ShardWorker(cfg_json, output, needs_teacher=False, needs_judge=False).builder


def _build_shard(shard: dict) -> int:
    return _BUILDER.build(shard)["num_pairs"]


RECIPE_FILE = "stage1_quality.json"


def build_pairs(cfg, output: str, kinds: list[str], workers: int) -> tuple[dict[str, list[str]], int, int]:
    """Build the shards of `kinds` that `output` lacks, in a pool of `workers` processes.

    Returns (the planned shard URIs per split, shards built, shards already there). A folder is reused only
    for the seed and data/degrade config it was built with (recorded in `RECIPE_FILE`): a shard's marker names
    its sources and crops, not the resolution or severities its pairs were made with.
    """
    from tqdm import tqdm

    from realrestorer import storage
    from realrestorer.data.build import SCAN_IN_DRIVER_MAX, pending_shards, plan_dataset
    from realrestorer.data.shards import shard_name, shard_uris

    recipe = json.dumps({"seed": cfg.seed, "data": cfg.data.model_dump(mode="json"),
                         "degrade": cfg.degrade.model_dump(mode="json")}, sort_keys=True)
    recipe_uri = storage.join(output, RECIPE_FILE)
    made_with = storage.read_bytes(recipe_uri, cfg.storage).decode() if storage.exists(recipe_uri, cfg.storage) else None
    if made_with != recipe and (made_with is not None or shard_uris(output, storage_cfg=cfg.storage)):
        raise ValueError(f"{output} holds pairs this script did not make with this seed and data/degrade config; "
                         "pass a new --data folder")
    try:
        plan = [s for s in plan_dataset(cfg, workers)[0] if s["kind"] in kinds]
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise ValueError(f"data.clean_source holds more than {SCAN_IN_DRIVER_MAX} images, which the builder scans "
                         "with Ray Data; build the dataset with jobs/synthesize.py and pass its folder as --data") from err
    storage.write_bytes(recipe_uri, recipe.encode(), cfg.storage)
    pending = pending_shards(plan, output, cfg)
    if pending:
        # spawn: the children start clean, whatever threads this process's torch has started
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_builder,
                                 initargs=(cfg.model_dump_json(), output)) as pool:
            with tqdm(total=len(pending), desc="shards", unit="shard") as bar:
                for num_pairs in pool.map(_build_shard, pending):
                    bar.set_postfix(pairs=num_pairs)
                    bar.update(1)
    uris: dict[str, list[str]] = {}
    for shard in plan:  # only the planned files: a reused folder may hold others
        uris.setdefault(shard["split"], []).append(storage.join(output, shard_name(shard["split"], shard["kind"],
                                                                                  shard["index"])))
    return uris, len(pending), len(plan) - len(pending)


def _column_batches(uris: list[str], columns: tuple[str, ...], storage_cfg):
    from realrestorer.data.shards import read_table

    for uri in uris:
        table = read_table(uri, storage_cfg).select(list(columns))
        for record_batch in table.to_batches():
            yield {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in columns}


def load_train_pairs(uris: list[str], storage_cfg):
    """Every pair of the shard files `uris`, decoded: (clean N×H×W×3 uint8, degraded, prompts)."""
    import numpy as np

    from realrestorer.data.shards import decode_stack

    clean, degraded, prompts = [], [], []
    for batch in _column_batches(uris, ("clean", "degraded", "prompt"), storage_cfg):
        clean += list(batch["clean"])
        degraded += list(batch["degraded"])
        prompts += [str(p) for p in batch["prompt"]]
    if not clean:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 1, 1, 3), np.uint8), np.asarray(prompts)
    both = decode_stack([*clean, *degraded], "training pairs")
    return both[: len(clean)], both[len(clean):], np.asarray(prompts)


def micro_batches(num_pairs: int, size: int, seed: int):
    """Endless index arrays of `size` pairs: epochs in a seeded order, each dropping its last partial batch."""
    import numpy as np

    if num_pairs < size:
        raise ValueError(f"{num_pairs} training pairs make no micro-batch of {size}")
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(num_pairs)
        for start in range(0, num_pairs - size + 1, size):
            yield order[start:start + size]
        epoch += 1


def _as_tensor(images):
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def train(cfg, stage, pairs, device, seconds: float) -> dict:
    """Train stage 1's DiT for `seconds` (or `stage.steps`); returns the restorer, EMA and the run's figures."""
    import torch

    from realrestorer.train.augment import augment_pairs, step_seed
    from realrestorer.train.deepspeed import build_trainee, init_one_process
    from realrestorer.train.schedule import learning_rate

    init_one_process(device)
    restorer, engine, optimizer, ema, _ = build_trainee(cfg, stage, device)
    clean_all, degraded_all, prompts_all = pairs
    batches = micro_batches(len(clean_all), stage.micro_batch_size, cfg.seed)
    num_accum = stage.grad_accumulation
    engine.train()
    started = time.perf_counter()
    step, window, window_steps, loss_value = 0, torch.zeros((), device=device), 0, float("nan")
    while step < stage.steps and time.perf_counter() - started < seconds:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage, step)
        for micro in range(num_accum):
            index = next(batches)
            generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, micro))
            clean, degraded = augment_pairs(_as_tensor(clean_all[index]), _as_tensor(degraded_all[index]),
                                            stage.augment, generator)
            loss = engine(clean.to(device), degraded.to(device), list(prompts_all[index]), generator=generator)
            engine.backward(loss)
            engine.step()
            window += loss.detach().float() / num_accum
        if ema is not None:
            ema.update(restorer.dit)
        step, window_steps = step + 1, window_steps + 1
        if step % stage.log_every == 0:
            loss_value, window_steps = float(window) / window_steps, 0
            window.zero_()
            elapsed = time.perf_counter() - started
            print(f"stage1 · step {step} · loss {loss_value:.4f} · {step * stage.batch_size / elapsed:.1f} samples/s · "
                  f"{elapsed / 60:.1f} of {seconds / 60:.1f} min", flush=True)
    if window_steps:  # the steps since the last progress line
        loss_value = float(window) / window_steps
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return {"restorer": restorer, "ema": ema, "steps": step, "seconds": elapsed, "loss": loss_value,
            "samples_per_s": step * stage.batch_size / elapsed}


def score(cfg, stage, run: dict, val: dict) -> dict[str, float]:
    """Val and identity PSNR/SSIM per group, as the trainer's validation computes them."""
    from realrestorer.train import validate

    clean, degraded = validate.decode_val_set(val)
    indices, restored = validate.restore_val_set(run["restorer"], val, degraded, stage.val_num_steps,
                                                 stage.micro_batch_size, cfg.seed, ema=run["ema"])
    psnr, ssim = validate.image_scores(clean[indices], restored)
    return {**validate.per_group(val["group"], psnr, ssim, "val"),
            **validate.per_group(val["group"], *validate.image_scores(clean, degraded), "identity")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="preset name or YAML file (default: small)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. model.text_encoder_path=/path")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall time (default: 20)")
    parser.add_argument("--data", default=None,
                        help="folder for the pairs (reused for the same seed and data config; default: a new temp folder)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes building the pairs")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.workers < 1:
        parser.error("--minutes must be positive and --workers at least 1")

    from pydantic import ValidationError

    from realrestorer.config import ConfigError, load_config
    from realrestorer.train.config import StageConfig

    try:
        cfg = load_config(args.preset, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        # One process: the stage's whole batch on one worker (more micro-batches a step where it had several).
        stage = StageConfig.model_validate({**cfg.train.stage1.model_dump(), "num_workers": 1})
    except ValidationError as err:
        message = err.errors()[0]["msg"].removeprefix("Value error, ")
        print(f"error: this runs stage 1's whole batch ({cfg.train.stage1.batch_size}) on one process, and then "
              f"{message} (set train.stage1.* with --set)", file=sys.stderr)
        return 2
    if stage.mixes:
        print(f"error: stage 1 of {args.preset} mixes {stage.kinds}; this measures a single-source stage 1",
              file=sys.stderr)
        return 2
    try:
        import pyiqa  # noqa: F401
        piqe = True
    except ImportError:
        piqe = False
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
            "filters": cfg.data.filters.model_copy(update={"quality_metrics": []})})})

    import torch

    from realrestorer.train import validate
    from realrestorer.train.throughput import cpu_math, cuda_math

    if stage.use_gpu and not torch.cuda.is_available():
        print(f"error: stage 1 of {args.preset} trains on a GPU and none is visible "
              "(--set train.stage1.use_gpu=false for the CPU)", file=sys.stderr)
        return 2
    output = args.data or tempfile.mkdtemp(prefix="stage1-quality-")
    started = time.perf_counter()
    try:
        uris, built, kept = build_pairs(cfg, output, stage.kinds, args.workers)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"pairs: {built} shards built, {kept} already there, in {time.perf_counter() - started:.0f} s "
          f"({'with' if piqe else 'without'} the PIQE filter) under {output}")
    splits = [stage.val_split] if isinstance(stage.val_split, str) else stage.val_split
    val = validate.pick_val_pairs(
        _column_batches([u for split in splits for u in uris.get(split, [])], validate.VAL_COLUMNS, cfg.storage),
        stage.num_val_per_task,
    )
    if not val:  # before training, not after it
        print(f"error: the {'/'.join(splits)} split holds no pairs to score", file=sys.stderr)
        return 2
    pairs = load_train_pairs(uris.get("train", []), cfg.storage)
    if len(pairs[0]) < stage.micro_batch_size:
        print(f"error: {len(pairs[0])} training pairs make no micro-batch of {stage.micro_batch_size}", file=sys.stderr)
        return 2

    device = torch.device("cuda" if stage.use_gpu else "cpu")
    cpu_math(stage.cpus_per_worker if device.type == "cpu" else torch.get_num_threads())
    if device.type == "cuda":
        cuda_math()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu×{torch.get_num_threads()}"
    print(f"stage 1 of {args.preset} on {name}: {len(pairs[0])} training pairs, batch {stage.batch_size}, "
          f"ZeRO-{stage.zero_stage}{', compiled blocks' if stage.compile else ''}, for {args.minutes:g} min")
    run = train(cfg, stage, pairs, device, 60.0 * args.minutes)
    metrics = score(cfg, stage, run, val)
    print(f"stage1 · {run['steps']} steps in {run['seconds'] / 60:.1f} min · {run['samples_per_s']:.1f} samples/s · "
          f"loss {run['loss']:.4f} · {len(val['group'])} held-out pairs")
    print(validate.score_table(metrics))
    groups = validate.val_groups(metrics)
    print(json.dumps({
        "benchmark": "stage1_quality", "preset": args.preset, "device": name, "piqe_filter": piqe,
        "minutes": round(run["seconds"] / 60, 2), "steps": run["steps"], "samples_per_s": run["samples_per_s"],
        "loss": run["loss"], "val_pairs": len(val["group"]), "wins": validate.wins(metrics),
        "groups": {g: {"psnr": metrics[f"val/{g}/psnr"], "ssim": metrics[f"val/{g}/ssim"],
                       "identity_psnr": metrics[f"identity/{g}/psnr"], "identity_ssim": metrics[f"identity/{g}/ssim"]}
                   for g in groups},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
