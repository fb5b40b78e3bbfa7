"""Training-step speed: Ray Train + DeepSpeed against a bare PyTorch loop, same model, same batch.

Each variant runs in its own child process (so peak memory is its own) and
trains on one fixed batch for `--steps` timed steps after `--warmup` steps. The
batch is engine-degraded crops of the built-in photos, one task after another
(`--data random` uses uniform noise instead, for a box without the image stack):
real pixel statistics matter on CPU, where subnormal floats slowed a real batch
by a third in the training worker and not a random one.

  bare       torch AdamW on the DiT (fused on GPU); on GPU fp32 weights with bf16 autocast
  deepspeed  the trainer's DeepSpeed engine (bf16 + fp32 master weights on GPU, fp32 on CPU), no Ray
  ray        the same engine inside a one-worker Ray Train TorchTrainer

The ZeRO stage and whether the DiT's blocks are compiled come from the config's
stage 1 (`train.stage1.zero_stage`, `train.stage1.compile`: flux-width takes the
small preset's) unless `--zero` or `--compile/--no-compile` say otherwise; a
compiled run's warmup steps take the compile. `--no-ray` drops the Ray variant
(for a GPU box without Ray). `--rounds N` runs every variant N times, the
variants' order reversed each round so drift in the machine's speed falls on
both sides: the table gives each variant's median run (its ratio column
compares those runs), and the JSON ratio is the median of the rounds' own
ratios (a shared machine's speed moves between minutes more than between
adjacent runs); with an even N both medians take the lower middle. Prints a table, then one JSON line.

MFU is given two ways against the card's dense bf16 peak. `MFU` counts the DiT's
FLOPs with PyTorch's FLOP counter; `MFU 6NT` takes the usual 6 × parameters ×
tokens, which overstates a FLUX DiT's work (its modulation weights act once per
sample, its text-stream weights on the text tokens only): 1.7× the counted FLOPs
at FLUX width. Figures quoted from other trainers usually use the second.

    python benchmarks/train_step.py --config tiny --rounds 3
    python benchmarks/train_step.py --config flux-width --no-ray
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = ("tiny", "small", "flux-width")
DEFAULT_BATCH = {"tiny": 16, "small": 32, "flux-width": 16}
# FLUX width and heads at reduced depth; 8×8 pixel cells give FLUX's 1024 target tokens at 512².
FLUX_WIDTH = [
    "model.dit.num_layers=2", "model.dit.num_single_layers=4", "model.dit.attention_head_dim=128",
    "model.dit.num_attention_heads=24", "model.dit.axes_dims_rope=[16, 56, 56]", "model.pixel_patch=8",
    "model.dit.in_channels=768", "model.resolution=512", "data.resolution=512",
]
TARGETS = {"ratio_gpu": 0.9, "ratio_cpu": 0.8, "mfu_flux_width": 0.45}


def model_config(name: str, overrides: list[str] | tuple[str, ...] = ()):
    """The pipeline config of a benchmark config, with `KEY=VALUE` overrides (e.g. a local text encoder)."""
    from realrestorer.config import load_config

    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    if name == "flux-width":
        return load_config("small", [*FLUX_WIDTH, *overrides])
    return load_config(name, list(overrides))


def _photo_pairs(side: int, batch: int) -> tuple[list, list, list[str]]:
    """`batch` engine-degraded crops of the built-in photos at `side`², tasks in turn, seeded: uint8 H×W×3 pairs."""
    import cv2
    import numpy as np

    from realrestorer.data.config import DataConfig
    from realrestorer.data.sources import BUILTIN_PHOTOS, load_image
    from realrestorer.degrade import TASKS, degrade

    def short_side_to(photo):
        scale = side / min(photo.shape[:2])
        return cv2.resize(photo, (max(side, round(photo.shape[1] * scale)), max(side, round(photo.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)

    rng = np.random.default_rng(0)
    # Each photo once, its short side brought to `side`; every sample is a random square window of one.
    whole = DataConfig(min_side=1)
    photos = [short_side_to(load_image(uri, whole)[0]) for uri in BUILTIN_PHOTOS]
    clean, degraded, prompts = [], [], []
    for index in range(batch):
        photo = photos[index % len(photos)]
        y, x = (int(rng.integers(0, photo.shape[axis] - side + 1)) for axis in (0, 1))
        crop = np.ascontiguousarray(photo[y:y + side, x:x + side])
        task = list(TASKS)[index % len(TASKS)]
        clean.append(crop)
        degraded.append(degrade(task, crop, rng, float(rng.uniform(0.2, 0.8)))[0])
        prompts.append(TASKS[task])
    return clean, degraded, prompts


def _fixed_batch(model_cfg, batch: int, device, kind: str = "photos"):
    """The batch every step trains on: engine-degraded photo crops ('photos'), or uniform noise ('random')."""
    import numpy as np
    import torch

    from realrestorer.degrade import TASKS

    side = model_cfg.model.resolution
    if kind == "photos":
        clean, degraded, prompts = _photo_pairs(side, batch)
        as_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
        return as_tensor(clean).to(device), as_tensor(degraded).to(device), prompts
    if kind != "random":
        raise ValueError(f"unknown batch kind {kind!r}; choose 'photos' or 'random'")
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, side, side, generator=gen)
    prompts = [list(TASKS.values())[i % len(TASKS)] for i in range(batch)]
    return clean.to(device), (clean * 0.5 + 0.2).to(device), prompts


def _timed(step, device, warmup: int, steps: int, profile_to: str | None = None) -> float:
    """Seconds of `steps` steps after `warmup` ones; with `profile_to`, first profile `steps` more into that file."""
    from realrestorer.train.throughput import Stopwatch

    for _ in range(warmup):
        step()
    if profile_to:
        import torch
        from torch.profiler import ProfilerActivity, profile

        gpu = device.type == "cuda"
        with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]) as prof:
            for _ in range(steps):
                step()
            if gpu:
                torch.cuda.synchronize(device)  # the queued kernels finish inside the profiled window
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if gpu else "self_cpu_time_total", row_limit=40)
        Path(profile_to).write_text(f"{steps} steps\n{table}\n")
    watch = Stopwatch(device)
    for _ in range(steps):
        step()
    return watch.lap()


def _result(cfg, device, batch: int, steps: int, seconds: float) -> dict:
    import resource

    import torch

    from realrestorer.train.throughput import dit_step_cost, peak_flops, rates

    out = rates(dit_step_cost(cfg.model), batch * steps, seconds, 1, peak_flops(device))
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu×{torch.get_num_threads()}"
    return out


def _device():
    import torch

    from realrestorer.train.throughput import cpu_math, cuda_math

    cpu_math(torch.get_num_threads())  # as the trainer's worker does, in every variant

    if torch.cuda.is_available():
        cuda_math()
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def measure_bare(name: str, batch: int, warmup: int, steps: int, data: str = "photos",
                 overrides: tuple[str, ...] = (), compile: bool = False, profile_to: str | None = None) -> dict:
    import torch

    from realrestorer.model import build_restorer
    from realrestorer.model.transformer import compile_blocks

    device = _device()
    cfg = model_config(name, overrides)
    restorer = build_restorer(cfg.model).to(device).train()
    if compile:
        compile_blocks(restorer.dit)
    # The trainer's optimizer: torch AdamW, fused on GPU (train/deepspeed.py).
    optimizer = torch.optim.AdamW(restorer.dit.parameters(), lr=1e-4, fused=device.type == "cuda")
    clean, degraded, prompts = _fixed_batch(cfg, batch, device, data)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = restorer(clean, degraded, prompts, generator=torch.Generator().manual_seed(0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(restorer.dit.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _result(cfg, device, batch, steps, _timed(step, device, warmup, steps, profile_to))


def measure_deepspeed(name: str, batch: int, warmup: int, steps: int, zero_stage: int, data: str = "photos",
                      overrides: tuple[str, ...] = (), compile: bool = False, profile_to: str | None = None) -> dict:
    import torch

    from realrestorer.train.config import StageConfig
    from realrestorer.train.deepspeed import build_trainee, init_one_process

    device = _device()
    init_one_process(device)
    cfg = model_config(name, overrides)
    stage = StageConfig(batch_size=batch, micro_batch_size=batch, zero_stage=zero_stage, use_gpu=device.type == "cuda",
                        compile=compile)
    engine = build_trainee(cfg, stage, device).engine
    engine.train()
    clean, degraded, prompts = _fixed_batch(cfg, batch, device, data)

    def step():
        loss = engine(clean, degraded, prompts, generator=torch.Generator().manual_seed(0))
        engine.backward(loss)
        engine.step()

    return _result(cfg, device, batch, steps, _timed(step, device, warmup, steps, profile_to))


def measure_ray(name: str, batch: int, warmup: int, steps: int, zero_stage: int, data: str = "photos",
                overrides: tuple[str, ...] = (), compile: bool = False) -> dict:
    import ray
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    def worker(config: dict) -> None:
        from realrestorer.train.throughput import cpu_math

        cpu_math(config["threads"])
        measured = measure_deepspeed(name, batch, warmup, steps, zero_stage, data, overrides, compile)
        # Train V2 keeps only metrics that come with a checkpoint: ship them as one.
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "metrics.json").write_text(json.dumps(measured))
            ray.train.report(measured, checkpoint=ray.train.Checkpoint.from_directory(directory))

    use_gpu = torch.cuda.is_available()
    threads = os.cpu_count() or 1
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=threads + 2, include_dashboard=True)
    try:
        with tempfile.TemporaryDirectory() as storage:
            trainer = TorchTrainer(
                worker,
                train_loop_config={"threads": threads},
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu, resources_per_worker={"CPU": threads}),
                run_config=ray.train.RunConfig(name="train-step-benchmark", storage_path=storage),
            )
            with trainer.fit().checkpoint.as_directory() as directory:
                return json.loads(Path(directory, "metrics.json").read_text())
    finally:
        ray.shutdown()


def median_run(runs: list[dict]) -> dict:
    """The run of median samples/s (the lower middle one of an even count), whole: its MFU and memory go with it."""
    ordered = sorted(runs, key=lambda run: run["samples_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def _child(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--config", args.config, "--batch", str(args.batch),
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--zero", str(args.zero), "--data", args.data,
               *[f"--set={item}" for item in args.set], "--compile" if args.compile else "--no-compile",
               *([f"--profile={args.profile}"] if args.profile else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        # The child's traceback goes to the log; the reader gets its last line, which names the problem.
        sys.stderr.write(done.stderr[-3000:])
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no output")
        raise SystemExit(f"train_step.py: the {variant} run failed (exit {done.returncode}): {last}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=CONFIGS)
    parser.add_argument("--batch", type=int, default=None, help="samples per step (default per config)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--zero", type=int, default=None, choices=(0, 1, 2, 3),
                        help="DeepSpeed ZeRO stage (default: the config's train.stage1.zero_stage)")
    parser.add_argument("--data", default="photos", choices=("photos", "random"),
                        help="the fixed batch: engine-degraded crops of the built-in photos (real pixel statistics, "
                             "so data-dependent slow paths show), or uniform noise (needs no image stack)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. model.text_encoder_path=DIR on a box without the "
                             "MiniLM package)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the DiT's blocks in every variant, as train.<stage>.compile does "
                             "(default: the config's train.stage1.compile)")
    parser.add_argument("--no-ray", action="store_true", help="time the DeepSpeed engine without Ray Train")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, in alternating order, and report medians "
                             "(3 or more on a shared machine; default 1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="also profile --steps extra steps of the bare and DeepSpeed variants (torch.profiler, "
                             "untimed) and write each one's top operators to DIR/profile-<config>-<variant>.txt")
    parser.add_argument("--variant", choices=("bare", "deepspeed", "ray"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.batch or DEFAULT_BATCH[args.config]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from realrestorer.config import ConfigError

    try:
        cfg = model_config(args.config, args.set)  # a bad --set fails here, in one line, before any child starts
    except ConfigError as err:
        parser.error(str(err))
    args.zero = cfg.train.stage1.zero_stage if args.zero is None else args.zero
    args.compile = cfg.train.stage1.compile if args.compile is None else args.compile
    from pydantic import ValidationError

    from realrestorer.train.config import StageConfig

    try:  # the trainer's own rules for the pair (compile needs ZeRO <= 2), before any child starts
        StageConfig(zero_stage=args.zero, compile=args.compile)
    except ValidationError as err:
        parser.error(err.errors()[0]["msg"].removeprefix("Value error, "))

    if args.variant:
        profile_to = None
        if args.profile and args.variant != "ray":
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profile_to = str(Path(args.profile) / f"profile-{args.config}-{args.variant}.txt")
        if args.variant == "bare":
            result = measure_bare(args.config, args.batch, args.warmup, args.steps, args.data, tuple(args.set),
                                  args.compile, profile_to)
        elif args.variant == "deepspeed":
            result = measure_deepspeed(args.config, args.batch, args.warmup, args.steps, args.zero, args.data,
                                       tuple(args.set), args.compile, profile_to)
        else:
            result = measure_ray(args.config, args.batch, args.warmup, args.steps, args.zero, args.data,
                                 tuple(args.set), args.compile)
        print(json.dumps(result))
        return 0

    variants = ["bare", "deepspeed"] + ([] if args.no_ray else ["ray"])
    trainer_variant = "deepspeed" if args.no_ray else "ray"
    rounds = []
    for index in range(args.rounds):
        order = variants if index % 2 == 0 else variants[::-1]
        rounds.append({variant: _child(variant, args) for variant in order})
    results = {variant: median_run([r[variant] for r in rounds]) for variant in variants}
    ratios = [r[trainer_variant]["samples_per_s"] / r["bare"]["samples_per_s"] for r in rounds]
    bare = results["bare"]["samples_per_s"]
    gpu = "mfu" in results["bare"]
    compiled = " · compiled blocks" if args.compile else ""
    runs = f" · median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"train step · config {args.config} · batch {args.batch} ({args.data}) · ZeRO-{args.zero}{compiled} · "
          f"{results['bare']['device']}{runs}")
    print(f"{'variant':<11}{'samples/s':>11}{'tokens/s':>12}{'MFU':>8}{'MFU 6NT':>9}{'peak MB':>10}{'ratio':>8}")
    for variant, r in results.items():
        mfu, mfu_6nt = (f"{r[key]:.1%}" if key in r else "-" for key in ("mfu", "mfu_6nt"))
        print(f"{variant:<11}{r['samples_per_s']:>11.2f}{r['tokens_per_s']:>12.0f}{mfu:>8}{mfu_6nt:>9}"
              f"{r['peak_mem_mb']:>10.0f}{r['samples_per_s'] / bare:>8.3f}")
    if args.rounds > 1:
        print(f"{trainer_variant}/bare by round: {' '.join(f'{ratio:.3f}' for ratio in ratios)} "
              f"→ median {statistics.median_low(ratios):.3f}")
    summary = {
        "benchmark": "train_step", "config": args.config, "batch": args.batch, "data": args.data, "zero_stage": args.zero,
        "compile": args.compile,
        "device": results["bare"]["device"], "results": results,
        "rounds": [{variant: r[variant]["samples_per_s"] for variant in variants} for r in rounds],
        "ratio": statistics.median_low(ratios), "ratio_target": TARGETS["ratio_gpu" if gpu else "ratio_cpu"],
    }
    if gpu and args.config == "flux-width":
        # The target is read against the counted MFU, the stricter of the two (see the module docstring).
        summary["mfu_target"] = TARGETS["mfu_flux_width"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
