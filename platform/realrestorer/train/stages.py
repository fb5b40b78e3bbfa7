"""Stage entry points: `train_stage(cfg, "stage1" | "stage2")` runs a TorchTrainer and consolidates its last checkpoint.

Where things go (all under `storage.root`, local or s3://):

    train/<run_name>/             Ray Train's run folder: DeepSpeed checkpoints, one per `checkpoint_every` steps
    models/<run_name>/            the consolidated model: dit/ (diffusers safetensors) + model_card.json

Running `train_stage` again with the same run name resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from realrestorer import storage, tracking
from realrestorer.config import PipelineConfig
from realrestorer.train.batches import decode_pairs
from realrestorer.train.config import STAGES, StageConfig
from realrestorer.data.config import KINDS
from realrestorer.data.shards import decode_stack, read_shard_files, shard_uris
from realrestorer.train.loop import DEEPSPEED_TAG, EMA_FILE, FAIL_AT_STEP_ENV, train_loop
from realrestorer.train.validate import load_val_set

CARD_FORMAT = "realrestorer-model"


def run_name(cfg: PipelineConfig, stage_name: str) -> str:
    """The Ray Train run name of a stage: resuming means re-running under this name."""
    return cfg.train.stage(stage_name).run_name or f"{cfg.preset}-{stage_name}"


def dataset_uri(cfg: PipelineConfig) -> str:
    """The dataset folder the builder wrote."""
    return cfg.data.output or storage.join(cfg.storage.root, "datasets", cfg.data.name)


def model_uri(cfg: PipelineConfig, stage_name: str) -> str:
    """Where a stage's consolidated model goes."""
    return storage.join(cfg.storage.root, "models", run_name(cfg, stage_name))


def init_dit_uri(cfg: PipelineConfig, stage_name: str) -> str | None:
    """The diffusers DiT folder a stage starts from, or None to start as the model section builds it."""
    init_from = cfg.train.stage(stage_name).init_from
    if init_from is None:
        return None
    if init_from == stage_name:
        raise ValueError(f"train.{stage_name}.init_from names the stage itself")
    source = model_uri(cfg, init_from) if init_from in STAGES else init_from
    dit = storage.join(source, "dit")
    if not storage.exists(storage.join(dit, "config.json"), cfg.storage):
        hint = f": train {init_from} first (jobs/train.py --stage {init_from}, same preset and --set)" if init_from in STAGES else ""
        raise ValueError(f"train.{stage_name}.init_from: no consolidated model at {source} (missing dit/config.json){hint}")
    return dit


def _absolute(path: str | None) -> str | None:
    return path if path is None or "://" in path else os.path.abspath(os.path.expanduser(path))


def with_absolute_paths(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with its local paths (storage root, dataset, weights, init_from) made absolute here, in the driver.

    Train workers run in directories of Ray's choosing (a `ray job submit --working-dir` copy, another node's
    home), where a relative path would name another folder, or none.
    """
    stages = {}
    for name in STAGES:
        stage = cfg.train.stage(name)
        init_from = stage.init_from if stage.init_from in (None, *STAGES) else _absolute(stage.init_from)
        stages[name] = stage.model_copy(update={"init_from": init_from})
    model = {key: _absolute(getattr(cfg.model, key)) for key in ("pretrained_dit_path", "vae_path", "text_encoder_path")}
    return cfg.model_copy(update={
        "storage": cfg.storage.model_copy(update={"root": _absolute(cfg.storage.root)}),
        "data": cfg.data.model_copy(update={"output": _absolute(cfg.data.output)}),
        "model": cfg.model.model_copy(update=model),
        "train": cfg.train.model_copy(update=stages),
    })


def check_stage_inputs(cfg: PipelineConfig, stage_name: str) -> None:
    """One-line errors, before any worker starts, for a stage whose training pairs or weights are not there."""
    from realrestorer.model.restorer import check_model_files

    root = dataset_uri(cfg)
    kinds = cfg.train.stage(stage_name).kinds
    present = [kind for kind in KINDS if shard_uris(root, "train", [kind], cfg.storage)]
    missing = [kind for kind in kinds if kind not in present]
    if missing:
        has = ", ".join(present) if present else "none"
        hint = ""
        if not present:
            hint = " (build it first: jobs/synthesize.py with the same preset and --set)"
        elif "real" in missing and "proxy" in present:
            hint = " (without data.real_source the builder makes 'proxy' pairs: set it and rebuild, or train on 'proxy')"
        elif "proxy" in missing and "real" in present:
            hint = " (with data.real_source set the builder makes 'real' pairs: train on 'real')"
        raise ValueError(f"train.{stage_name}.kinds needs {', '.join(repr(k) for k in missing)} training pairs, but "
                         f"{root} has {has}{hint}")
    check_model_files(cfg.model)
    check_resume_workers(cfg, stage_name)


def check_resume_workers(cfg: PipelineConfig, stage_name: str) -> None:
    """A run to be resumed under ZeRO 1-3 must keep its worker count: DeepSpeed cannot re-partition the
    optimizer state it saved, and every worker would fail on load. (ZeRO-0 resumes on any count.)"""
    stage = cfg.train.stage(stage_name)
    if stage.zero_stage == 0:
        return
    name = run_name(cfg, stage_name)
    fs, path = storage.filesystem(storage.join(cfg.storage.root, "train", name), cfg.storage)
    steps = sorted(fs.glob(f"{path}/step-*"))
    if not steps:
        return
    saved = len(fs.glob(f"{steps[-1]}/{DEEPSPEED_TAG}/*optim_states.pt"))
    if saved and saved != stage.num_workers:
        raise ValueError(f"run {name} was checkpointed on {saved} worker{'s' * (saved != 1)}, and DeepSpeed cannot re-partition its ZeRO "
                         f"optimizer state for {stage.num_workers}: resume it with train.{stage_name}.num_workers={saved}, "
                         f"or give a new train.{stage_name}.run_name")


def decoded_mb(cfg: PipelineConfig, kinds: list[str], stop_above_mb: float | None = None) -> float:
    """Decoded size in MB of the train pairs of `kinds` at `data.resolution`.

    The pairs are counted in the dataset manifest, or, for a dataset without one (pairs written by other
    tools or with `write_pairs`), in the Parquet footers of its train shards, one file at a time, stopping
    once the size passes `stop_above_mb`: a large dataset costs a few footer reads, not one per shard.
    """
    from realrestorer.data.shards import num_rows

    per_pair = 2 * 3 * cfg.data.resolution**2 / 2**20
    uri = storage.join(dataset_uri(cfg), "manifest.json")
    if storage.exists(uri, cfg.storage):
        counts = json.loads(storage.read_bytes(uri, cfg.storage))["counts"].get("train", {})
        return sum(n for kind in kinds for n in counts.get(kind, {}).values()) * per_pair
    pairs = 0
    for shard in shard_uris(dataset_uri(cfg), "train", kinds, cfg.storage):
        pairs += num_rows(shard, cfg.storage)
        if stop_above_mb is not None and pairs * per_pair > stop_above_mb:
            break
    return pairs * per_pair


def rank_files(uris: list[str], rows: list[int], world: int, spread: float = 1.25) -> list[list[str]] | None:
    """Each of `world` workers' own files of a mixed source, dealt by row count, or None where that cannot be fair.

    Largest file first, each to the worker with the fewest rows so far; empty files (a shard whose every pair
    was rejected) are left out. Every worker draws from its share at the same rate, so a share with fewer rows
    would repeat its pairs more often: None when a worker would get no file or the largest share exceeds the
    smallest by more than `spread`, and the workers split the whole source by rows instead.
    """
    files = sorted((n, uri) for uri, n in zip(uris, rows) if n > 0)
    if len(files) < world:
        return None
    shares: list[list[str]] = [[] for _ in range(world)]
    totals = [0] * world
    for n, uri in reversed(files):
        rank = min(range(world), key=lambda r: (totals[r], r))
        shares[rank].append(uri)
        totals[rank] += n
    if max(totals) > spread * min(totals):
        return None
    return [sorted(share) for share in shares]


def file_rows(uris: list[str], storage_cfg=None) -> list[int]:
    """Row counts of shard files from their Parquet footers (no pixels read), a few files at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from realrestorer.data.shards import num_rows

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda uri: num_rows(uri, storage_cfg), uris))


def training_datasets(cfg: PipelineConfig, stage: StageConfig) -> dict[str, Any]:
    """The stage's training pairs as Ray Datasets: `train` (decoded), or the rows to mix: `synthetic` and `real`,
    or per worker `synthetic-<rank>` and `real-<rank>` (`rank_files`).

    Shards hold the crops of a few source images each, so in file order a batch would see one or two
    images at a time. A dataset small enough (`cache_mb`) is shuffled row by row (seeded) and materialized
    once: every epoch then reads the object store instead of restarting a read-and-decode pipeline, which
    costs seconds per epoch on small sets (3 to 8 s for a 72-pair test set on the 2-core CI machine, whose
    nine training steps an epoch took under a second). A larger one streams its shards in a seeded random
    order, and the workers' local shuffle buffers mix rows across them.
    """
    from realrestorer.data.shards import read_shards

    columns = ["clean", "degraded", "prompt", "task", "kind"]
    root = dataset_uri(cfg)
    cached = decoded_mb(cfg, stage.kinds, stop_above_mb=stage.cache_mb) <= stage.cache_mb

    def ordered(ds, decode: bool = False):
        # Settings on this dataset's own context, not the process-wide one. Ordered execution: otherwise the
        # seeded shuffle and the decode emit rows in the order Ray's tasks finish, which differs from run to
        # run, and a job re-run under the same name would resume at its saved (epoch, position) in another stream.
        ds.context.execution_options.preserve_order = True
        # Rank 0 prints the stage's progress over steps; Ray Data's bars would redraw for every epoch.
        ds.context.enable_progress_bars = False
        ds = ds.select_columns(columns)
        ds = ds.random_shuffle(seed=cfg.seed) if cached else ds.randomize_block_order(seed=cfg.seed)
        if decode:
            ds = ds.map_batches(decode_pairs, batch_format="numpy")
        return ds.materialize() if cached else ds

    if stage.mixes:
        # Mixed sources are not split by Ray (see batches.RankRows): each worker gets its own shard files where
        # they can be dealt fairly (`rank_files`), `<source>-<rank>`, and reads only those; otherwise the whole
        # source, keeping every world-th row, which reads the source once per worker.
        others = [kind for kind in stage.kinds if kind != "synthetic"]
        datasets = {}
        for name, kinds in (("synthetic", ["synthetic"]), ("real", others)):
            uris = shard_uris(root, "train", kinds, cfg.storage)
            shares = None
            if len(uris) >= stage.num_workers:  # else no deal is possible: spare the footer reads
                shares = rank_files(uris, file_rows(uris, cfg.storage), stage.num_workers)
            if shares is None:
                datasets[name] = ordered(read_shard_files(uris, cfg.storage))
            else:
                datasets.update({f"{name}-{rank}": ordered(read_shard_files(files, cfg.storage))
                                 for rank, files in enumerate(shares)})
        return datasets
    return {"train": ordered(read_shards(root, split="train", kinds=stage.kinds, storage_cfg=cfg.storage), decode=True)}


def _storage_args(cfg: PipelineConfig) -> dict[str, Any]:
    import pyarrow.fs as pafs

    uri = storage.join(cfg.storage.root, "train")
    fs, path = storage.filesystem(uri, cfg.storage)
    if uri.startswith(("s3://", "s3a://")):
        return {"storage_path": path, "storage_filesystem": pafs.PyFileSystem(pafs.FSSpecHandler(fs))}
    Path(path).mkdir(parents=True, exist_ok=True)
    return {"storage_path": path}


def _worker_env() -> dict[str, Any]:
    # Train workers are started by Ray, not by this process: pass the fault-injection switch on explicitly.
    if FAIL_AT_STEP_ENV in os.environ:
        return {"env_vars": {FAIL_AT_STEP_ENV: os.environ[FAIL_AT_STEP_ENV]}}
    return {}


@contextlib.contextmanager
def _mlflow_run(cfg: PipelineConfig, stage_name: str, name: str) -> Iterator[str | None]:
    """The MLflow run of a training run: the one a previous attempt under the same name opened, else a new one."""
    if cfg.tracking.uri is None:
        yield None
        return
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    experiment = mlflow.get_experiment_by_name(f"{cfg.tracking.experiment_prefix}-{stage_name}")
    earlier = []
    if experiment is not None:
        earlier = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.train_run = '{name}'", output_format="list")
    if earlier:
        with mlflow.start_run(run_id=earlier[0].info.run_id) as active:
            yield active.info.run_id
    else:
        with tracking.run(cfg, stage_name, run_name=name) as active:
            mlflow.set_tag("train_run", name)
            yield active.info.run_id


def _manifest_sha256(cfg: PipelineConfig) -> str | None:
    uri = storage.join(dataset_uri(cfg), "manifest.json")
    if not storage.exists(uri, cfg.storage):
        return None
    return hashlib.sha256(storage.read_bytes(uri, cfg.storage)).hexdigest()


def consolidate(checkpoint, cfg_json: dict[str, Any], card: dict[str, Any], out_uri: str) -> str:
    """Merge a DeepSpeed checkpoint's ZeRO shards into one fp32 DiT and save it with its model card.

    With EMA on, the EMA weights are the ones saved. Returns `out_uri`.
    """
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    from realrestorer.model.restorer import build_dit, save_model

    cfg = PipelineConfig.model_validate(cfg_json)
    with checkpoint.as_directory() as directory:
        root = Path(directory)
        if (root / EMA_FILE).exists():
            dit_state = load_file(str(root / EMA_FILE))
        else:
            if cfg.train.stage(card["stage"]).zero_stage == 0:
                states = root / DEEPSPEED_TAG / "mp_rank_00_model_states.pt"
                full = torch.load(states, map_location="cpu", weights_only=False)["module"]
            else:
                full = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=DEEPSPEED_TAG)
            dit_state = {name[len("dit."):]: value for name, value in full.items() if name.startswith("dit.")}
    # Only the DiT, built on the meta device and given the merged tensors: no codec or text encoder is loaded,
    # and no random weights are made to be overwritten (at 12 B each would be another 48 GB of host memory).
    # Saved in fp32, the master weights' precision; the card keeps the trained dtype, which serving loads in.
    model_cfg = cfg.model.model_copy(update={"pretrained_dit_path": None})
    with torch.device("meta"):
        dit = build_dit(model_cfg)
    dit.load_state_dict({k: v.float().contiguous() for k, v in dit_state.items()}, strict=True, assign=True)
    save_model(dit, model_cfg, out_uri, card)
    return out_uri


def consolidation_memory(num_params: int, node_memory: list[float]) -> tuple[int, str | None]:
    """Bytes of host memory to reserve for consolidating a DiT of `num_params`, given `node_memory` (Ray's
    memory resource of each live node), and a warning when no node has enough.

    The merged fp32 weights once, a margin of one shard (`save_dit` cuts them at 10 GB; safetensors 0.8 writes
    from the tensors, older releases serialise a shard in memory first) and 1 GiB for the libraries: about 59 GB
    at 12 B. Without a request Ray could put the task on a small head node, to be killed for memory after
    training had finished. Where no node is that large the request is the largest node's, so the task runs
    there rather than waiting for ever on a cluster that cannot grow (Ray counts about 70 % of a node's free
    memory, the rest going to its object store).
    """
    weights = 4 * num_params
    need = weights + min(weights, 10 * 10**9) + 2**30
    largest = max(node_memory, default=0.0)
    if largest >= need:
        return need, None
    return int(largest), (f"consolidating the {num_params / 1e9:.2f} B-parameter DiT needs about {need / 1e9:.0f} GB of "
                          f"memory on one node, and the largest node offers {largest / 1e9:.0f} GB: it runs there and may "
                          "run out of memory")


def train_loop_config(cfg: PipelineConfig, stage_name: str) -> dict[str, Any]:
    """What every worker gets, but for the data layout and MLflow run: the resolved config, init weights,
    validation pairs."""
    stage = cfg.train.stage(stage_name)
    val = load_val_set(dataset_uri(cfg), stage.kinds, stage.num_val_per_task, cfg.storage, stage.val_split)
    decode_stack([*val["clean"], *val["degraded"]], "validation pairs")  # a one-line error here, not one per worker
    return {
        "cfg": cfg.model_dump(mode="json"),
        "stage": stage_name,
        "init_dit": init_dit_uri(cfg, stage_name),
        "val": val,
    }


def train_stage(cfg: PipelineConfig, stage_name: str) -> dict[str, Any]:
    """Train one stage on Ray Train + DeepSpeed (resuming a run of the same name), then consolidate its model."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = with_absolute_paths(cfg)
    check_stage_inputs(cfg, stage_name)
    stage = cfg.train.stage(stage_name)
    name = run_name(cfg, stage_name)
    started = time.perf_counter()
    ingest = ray.train.DataConfig.default_ingest_options()
    # Ordered output makes a worker's stream, and so a resumed position in it, repeatable.
    ingest.preserve_order = True
    datasets = training_datasets(cfg, stage)
    loop_config = {**train_loop_config(cfg, stage_name), "datasets": sorted(datasets)}
    # Mixed sources are not split by Ray (see training_datasets and batches.RankRows); a single source is.
    data_config = ray.train.DataConfig(datasets_to_split=[] if stage.mixes else ["train"], execution_options=ingest)
    with _mlflow_run(cfg, stage_name, name) as mlflow_run_id:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={**loop_config, "mlflow_run_id": mlflow_run_id},
            scaling_config=ray.train.ScalingConfig(
                num_workers=stage.num_workers, use_gpu=stage.use_gpu, resources_per_worker={"CPU": stage.cpus_per_worker}
            ),
            run_config=ray.train.RunConfig(
                name=name,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=stage.num_checkpoints_kept),
                failure_config=ray.train.FailureConfig(max_failures=stage.max_failures),
                worker_runtime_env=_worker_env(),
                **_storage_args(cfg),
            ),
            datasets=datasets,
            dataset_config=data_config,
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training run {name} ended without a checkpoint")
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        num_params = int(metrics.pop("dit_parameters", 0))  # absent in a checkpoint older than this field
        card = {
            "format": CARD_FORMAT,
            "preset": cfg.preset,
            "stage": stage_name,
            "run_name": name,
            "step": int(metrics.get("step", stage.steps)),
            "config": cfg.model_dump(mode="json"),
            "data_uri": dataset_uri(cfg),
            "data_manifest_sha256": _manifest_sha256(cfg),
            "ema": stage.ema_decay is not None,
            "dit_parameters": num_params or None,
            "metrics": metrics,
        }
        out_uri = model_uri(cfg, stage_name)
        resources: dict[str, Any] = {"num_cpus": 1}
        if num_params:
            nodes = [node["Resources"].get("memory", 0.0) for node in ray.nodes() if node.get("Alive")]
            memory, warning = consolidation_memory(num_params, nodes)
            if memory:
                resources["memory"] = memory
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        # In a Ray task: DeepSpeed must stay out of the driver process (ray#50406).
        task = ray.remote(**resources)(consolidate)
        ray.get(task.remote(result.checkpoint, cfg.model_dump(mode="json"), card, out_uri))
        if mlflow_run_id is not None:
            import mlflow

            mlflow.log_dict(card, "model_card.json")
            mlflow.set_tag("model_uri", out_uri)
    return {
        "stage": stage_name,
        "run_name": name,
        "steps": card["step"],
        "model_uri": out_uri,
        "checkpoint": result.checkpoint.path,
        "mlflow_run_id": mlflow_run_id,
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
    }
