"""The Ray Train worker function: a DeepSpeed engine over the restorer, fed by Ray Data.

Each worker builds the restorer, hands it to DeepSpeed (only the DiT's
parameters go to the optimizer), resumes from `ray.train.get_checkpoint()` when
there is one, and then runs optimizer steps until the stage's planned count.
Every `checkpoint_every` steps all workers save their DeepSpeed shards and call
`ray.train.report` together.

Data position: a non-mixing stage streams epochs of its Ray Data shard and a
checkpoint records (epoch, micro-batches consumed), so a resumed run skips to the
same place. A mixed stage (stage 2) records each worker's (pass, rows read) place
in both sources; on resume the reader skips those rows and seeds its
synthetic/real picks by draw number, which follows from the step, so it hands out
the batches the uninterrupted run would have.

Fault injection for tests: with REALRESTORER_FAIL_AT_STEP=N set, rank 0 of a
run that started without a checkpoint exits the process abruptly when it
reaches step N, as a crashed or preempted worker would.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realrestorer.config import PipelineConfig
from realrestorer.train import validate
from realrestorer.data.mixing import MixingReader, ratio_at
from realrestorer.train.augment import augment_pairs, step_seed
from realrestorer.train.batches import (
    RankRows, micro_batches, mixed_micro_batches, mixed_share, resume_position, resume_sources,
)
from realrestorer.train.deepspeed import build_trainee
from realrestorer.train.ema import EMA
from realrestorer.train.schedule import learning_rate
from realrestorer.train.throughput import Stopwatch, cpu_math, cuda_math, dit_step_cost, peak_flops, rates

FAIL_AT_STEP_ENV = "REALRESTORER_FAIL_AT_STEP"
DEEPSPEED_TAG = "deepspeed"
STATE_FILE = "train_state.json"
EMA_FILE = "ema.safetensors"
STATE_VERSION = 1


def _load_state(engine, ema: EMA | None, checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as directory:
        engine.load_checkpoint(directory, tag=DEEPSPEED_TAG)
        state = json.loads((Path(directory) / STATE_FILE).read_text())
        if ema is not None:
            ema.load(Path(directory) / EMA_FILE)
    if state.get("version", 0) > STATE_VERSION:
        raise ValueError(f"checkpoint train state version {state['version']} is newer than this code ({STATE_VERSION})")
    return state


def _save_and_report(engine, ema: EMA | None, state: dict[str, Any], metrics: dict[str, float], rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        engine.save_checkpoint(directory, tag=DEEPSPEED_TAG)
        if rank == 0:
            (Path(directory) / STATE_FILE).write_text(json.dumps({**state, "version": STATE_VERSION}, indent=2))
            if ema is not None:
                ema.save(Path(directory) / EMA_FILE)
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step-{state['step']:08d}")


def _gathered(value: Any, world: int) -> list[Any]:
    """`value` from every rank, in rank order."""
    if world == 1:
        return [value]
    values: list[Any] = [None] * world
    torch.distributed.all_gather_object(values, value)
    return values


def _global_mean(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / torch.distributed.get_world_size()


def _validate(restorer, ema: EMA | None, val: dict[str, Any], clean: np.ndarray, degraded: np.ndarray,
              num_steps: int | None, batch_size: int, seed: int, rank: int, world: int,
              lockstep: bool) -> tuple[dict[str, float], np.ndarray]:
    """Val PSNR/SSIM per group and the sample grid, on every rank; each rank restores and scores its share.

    Every rank used to restore the whole set: 32 workers of the flux-12b preset each sampled all its pairs.
    """
    indices, restored = validate.restore_val_set(restorer, val, degraded, num_steps, batch_size, seed, rank, world,
                                                 lockstep, ema)
    psnr, ssim = validate.image_scores(clean[indices], restored)
    indices, rows = validate.rank_share(val["group"], indices, restored)
    psnr, ssim, grid_rows = validate.merge_shares(_gathered((indices, psnr, ssim, rows), world), len(degraded))
    metrics = validate.per_group(val["group"], psnr, ssim, "val")
    return metrics, validate.sample_grid(val["group"], degraded, grid_rows, clean)


def progress_line(stage_name: str, step: int, total: int, first_step: int, seconds: float, metrics: dict[str, float]) -> str:
    """One line of a stage's progress: steps done, loss, speed and the time left at this attempt's mean pace.

    Printed by rank 0 every `log_every` steps, so a terminal and a `ray job submit` log read alike.
    """
    done_here = step - first_step
    left = (total - step) * seconds / done_here if done_here > 0 else None
    eta = "?" if left is None else f"{int(left // 60)} min {int(left % 60):02d} s"
    return (f"{stage_name} · step {step}/{total} ({100 * step / total:.0f} %) · loss {metrics['loss']:.4f} · "
            f"{metrics['samples_per_s']:.1f} samples/s · {eta} left")


class Tracker:
    """Rank 0's MLflow client on the run the driver opened; does nothing on other ranks or with tracking off.

    A tracking server that stops answering (or one on the driver's loopback, out of reach of a worker on
    another node) costs the run its MLflow metrics, not the training: the first failure prints one line and
    tracking stays off for the rest of this attempt; checkpoints and Ray Train's metrics go on as before.
    """

    def __init__(self, uri: str | None, run_id: str | None, rank: int):
        self.client, self.uri, self.run_id = None, uri, run_id
        if uri and run_id and rank == 0:
            import mlflow

            # MLflow's own defaults (7 retries with backoff, 120 s a request) would hold rank 0, and with it every
            # worker in the next all-reduce, for minutes on a dead server; the job's environment can still set them.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            self.client = mlflow.MlflowClient(uri)

    def _log(self, call, *args, **kwargs) -> None:
        if self.client is None:
            return
        try:
            call(self.client, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure of the tracking server, reported once
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            sys.stderr.write(f"warning: MLflow at {self.uri} failed ({type(err).__name__}: {first[:200]}); "
                             "training goes on without MLflow logging\n")
            self.client = None

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        self._log(lambda c: c.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()]))

    def image(self, image: np.ndarray, name: str) -> None:
        self._log(lambda c: c.log_image(self.run_id, image, artifact_file=name))


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function for one stage; `config` comes from `stages.train_loop_config`."""
    import ray.train
    import ray.train.torch

    cfg = PipelineConfig.model_validate(config["cfg"])
    stage = cfg.train.stage(config["stage"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cpu_math(stage.cpus_per_worker)
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        cuda_math()

    restorer, engine, optimizer, ema, num_params = build_trainee(cfg, stage, device, config["init_dit"],
                                                                 init_key=f"train.{config['stage']}.init_from")

    state = {"stage": config["stage"], "step": 0, "epoch": 0, "position": 0, "starts": []}
    checkpoint = ray.train.get_checkpoint()
    resumed = checkpoint is not None
    if resumed:
        state = _load_state(engine, ema, checkpoint)
        moved = resume_position(state, world)
        if moved is not None and rank == 0:
            sys.stdout.write(f"{config['stage']}: resuming on {world} workers instead of {state['world']}; "
                             f"epoch {state['epoch']} goes on from micro-batch {moved} of each worker's share\n")
        state["position"] = state["position"] if moved is None else moved
    state["world"] = world
    # The step each attempt started from: a record of every resume.
    state["starts"] = [*state["starts"], state["step"]]

    fail_at = int(os.environ.get(FAIL_AT_STEP_ENV, "0"))
    tracker = Tracker(cfg.tracking.uri, config["mlflow_run_id"], rank)
    # Counted here, where diffusers is already imported: in the driver the import alone takes seconds.
    cost = dit_step_cost(cfg.model)
    peak = peak_flops(device)
    val = config["val"]
    val_clean, val_degraded = validate.decode_val_set(val)
    val_steps = stage.val_num_steps
    # The identity baseline (the degraded input itself) is what a restorer has to beat.
    identity = validate.per_group(val["group"], *validate.image_scores(val_clean, val_degraded), "identity")
    if not resumed:
        tracker.metrics(identity, step=0)

    num_accum = stage.grad_accumulation
    if stage.mixes:
        # A resumed reader goes on where each source stopped, with the draws the uninterrupted run would make.
        positions = resume_sources(state, rank, world) if resumed else None
        if resumed and rank == 0:
            where = ("; ".join(f"{name} pass {p + 1}, after {n} rows of worker 0's share" for name, (p, n) in positions.items())
                     if positions else "this checkpoint holds no source positions, so both sources restart from the top")
            sys.stdout.write(f"{config['stage']}: mixed sources resume at {where}\n")
        def source(name: str, seed: int) -> RankRows:
            dataset, share_rank, share_world = mixed_share(name, rank, world, config.get("datasets", []))
            return RankRows(ray.train.get_dataset_shard(dataset), share_rank, share_world, stage.shuffle_buffer, seed)

        reader = MixingReader(
            source("synthetic", cfg.seed), source("real", cfg.seed + 1),
            cfg.data.mixing, stage.micro_batch_size, stage.steps, seed=cfg.seed * 100_003 + rank, start_step=state["step"],
            draws=state["step"] * num_accum, positions=positions,
        )
        stream = mixed_micro_batches(reader, state["step"], num_accum)
    else:
        stream = micro_batches(
            ray.train.get_dataset_shard("train"), stage.micro_batch_size, stage.shuffle_buffer, cfg.seed,
            state["epoch"], state["position"],
        )
    window_loss, window_steps = 0.0, 0
    watch = Stopwatch(device)
    metrics: dict[str, float] = {}
    first_step, started = state["step"], time.perf_counter()
    engine.train()
    while state["step"] < stage.steps:
        step = state["step"]
        if fail_at and not resumed and step == fail_at and rank == 0:
            # Die once the controller has registered the last checkpoint (reports reach it asynchronously),
            # as a worker preempted some time after its last save would.
            ray.train.get_all_reported_checkpoints()
            os._exit(1)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage, step)
        step_loss = torch.zeros((), device=device)
        for micro in range(num_accum):
            state["epoch"], state["position"], batch = next(stream)
            generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, rank * num_accum + micro))
            clean, degraded = augment_pairs(batch["clean"], batch["degraded"], stage.augment, generator)
            loss = engine(clean.to(device), degraded.to(device), batch["prompts"], generator=generator)
            engine.backward(loss)
            engine.step()
            # Kept on the device: reading the loss every micro-step would stall the GPU queue.
            step_loss += loss.detach().float() / num_accum
        if ema is not None:
            ema.update(restorer.dit)
        state["step"] = step + 1
        window_loss, window_steps = window_loss + step_loss, window_steps + 1

        last = state["step"] == stage.steps
        if state["step"] % stage.log_every == 0 or last:
            seconds = watch.lap()
            metrics = {
                "loss": _global_mean(float(window_loss) / window_steps, device),
                "lr": learning_rate(stage, step),
                "epoch": float(state["epoch"]),
                **rates(cost, window_steps * stage.batch_size, seconds, world, peak),
            }
            if stage.mixes:
                metrics["synthetic_ratio"] = ratio_at(step, cfg.data.mixing, stage.steps)
            tracker.metrics(metrics, step=state["step"])
            if rank == 0:
                # Not print(): Ray Train patches it in workers to log as well, so the driver showed each line
                # twice (stdout and stderr) and three times in a terminal.
                sys.stdout.write(progress_line(config["stage"], state["step"], stage.steps, first_step,
                                               time.perf_counter() - started, metrics) + "\n")
                sys.stdout.flush()
            window_loss, window_steps = 0.0, 0
        if (stage.val_every and state["step"] % stage.val_every == 0) or last:
            val_metrics, grid = _validate(restorer, ema, val, val_clean, val_degraded, val_steps, stage.micro_batch_size,
                                          cfg.seed, rank, world, lockstep=stage.zero_stage == 3)
            tracker.metrics(val_metrics, step=state["step"])
            tracker.image(grid, f"samples/step-{state['step']:08d}.png")
            metrics.update(val_metrics, **identity)
            watch.lap()  # validation time is not training throughput
        if state["step"] % stage.checkpoint_every == 0 or last:
            if stage.mixes:  # each worker's own read positions: its picks differ from the others'
                state["sources"] = _gathered(reader.positions(), world)
            _save_and_report(engine, ema, state, {**metrics, "step": state["step"], "dit_parameters": num_params}, rank)
