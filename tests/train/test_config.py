"""The train section, the schedules and the DeepSpeed config: pure functions, no Ray, no DeepSpeed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from realrestorer.config import ConfigError, load_config
from realrestorer.train.config import StageConfig, TrainConfig
from realrestorer.train.deepspeed import deepspeed_config
from realrestorer.train.schedule import learning_rate


@pytest.mark.parametrize("preset", ["tiny", "small", "flux-12b"])
def test_presets_give_consistent_stages(preset):
    cfg = load_config(preset)
    one, two = cfg.train.stage("stage1"), cfg.train.stage("stage2")
    assert one.schedule == "constant" and two.schedule == "cosine"
    assert one.kinds == ["synthetic"] and two.mixes
    assert two.init_from == "stage1"
    for stage in (one, two):
        assert stage.grad_accumulation * stage.micro_batch_size * stage.num_workers == stage.batch_size
    assert cfg.train.stage1.use_gpu == (preset != "tiny")


def test_unknown_stage_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown training stage 'stage3'"):
        TrainConfig().stage("stage3")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 10, "micro_batch_size": 4}, "not a multiple of micro_batch_size"),
        ({"ema_decay": 0.99, "zero_stage": 3}, "ema_decay needs zero_stage <= 2"),
        ({"compile": True, "zero_stage": 3}, "compile needs zero_stage <= 2"),
        ({"steps": 10, "warmup_steps": 10}, "warmup_steps 10 must be below steps 10"),
        ({"kinds": ["synthetic", "synthetic"]}, "repeats a kind"),
        ({"use_gpu": True, "batch_size": 16, "micro_batch_size": 4, "zero_stage": 1}, "sum their gradients in bf16"),
        ({"use_gpu": True, "batch_size": 16, "micro_batch_size": 8, "zero_stage": 0}, "use zero_stage 2"),
    ],
)
def test_bad_stage_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        StageConfig(**overrides)


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match="train.stage1.zero_stage"):
        load_config("tiny", ["train.stage1.zero_stage=4"])
    with pytest.raises(ConfigError, match="train.stage2"):
        load_config("tiny", ["train.stage2.no_such_field=1"])


def test_warmup_then_constant():
    stage = StageConfig(lr=1e-3, warmup_steps=4, steps=100, schedule="constant")
    assert [learning_rate(stage, s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert learning_rate(stage, 99) == pytest.approx(1e-3)


def test_cosine_decays_to_its_floor_at_the_last_step():
    stage = StageConfig(lr=1e-3, warmup_steps=10, steps=110, schedule="cosine", min_lr_ratio=0.1)
    lrs = [learning_rate(stage, s) for s in range(110)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4)
    # Halfway through the decay the cosine is at the midpoint between peak and floor.
    assert learning_rate(stage, 10 + 99 // 2) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 49 / 99)))


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="step must be >= 0"):
        learning_rate(StageConfig(), -1)


def test_deepspeed_config_on_cpu_and_gpu():
    cpu = deepspeed_config(StageConfig(batch_size=16, micro_batch_size=4, num_workers=2, zero_stage=2, grad_clip=0.5))
    assert cpu["bf16"]["enabled"] is False
    assert cpu["train_batch_size"] == cpu["train_micro_batch_size_per_gpu"] * cpu["gradient_accumulation_steps"] * 2
    assert cpu["gradient_accumulation_steps"] == 2
    assert cpu["zero_optimization"]["stage"] == 2 and cpu["zero_optimization"]["overlap_comm"] is False
    assert cpu["optimizer"]["type"] == "AdamW" and cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["optimizer"]["params"]["fused"] is False  # torch's fused AdamW is the GPU path
    assert cpu["gradient_clipping"] == 0.5

    gpu = deepspeed_config(StageConfig(use_gpu=True, zero_stage=3, warmup_steps=10, lr=2e-4))
    assert gpu["bf16"]["enabled"] is True
    assert gpu["zero_optimization"]["stage"] == 3
    assert gpu["optimizer"]["params"]["fused"] is True
    assert gpu["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    # The optimizer starts at the first warmup LR; the loop sets each later step's LR itself.
    assert gpu["optimizer"]["params"]["lr"] == pytest.approx(2e-5)
    # Micro-batch gradients sum in fp32 on GPU (test_parts shows what that changes); with one micro-batch a step
    # there is nothing to sum and no fp32 buffers are made; fp32 on CPU sums in fp32 anyway.
    assert gpu["gradient_accumulation_steps"] > 1 and gpu["data_types"] == {"grad_accum_dtype": "fp32"}
    single = deepspeed_config(StageConfig(use_gpu=True, zero_stage=1, batch_size=16, micro_batch_size=16))
    assert "data_types" not in single and "data_types" not in cpu


def test_stage2_starts_from_the_consolidated_stage1_model(tmp_path):
    from realrestorer.train.stages import init_dit_uri, model_uri

    cfg = load_config("tiny", [f"storage.root={tmp_path}"])
    assert init_dit_uri(cfg, "stage1") is None
    with pytest.raises(ValueError, match=r"train.stage2.init_from: no consolidated model at .*tiny-stage1 .*: train stage1 first \(jobs/train.py --stage stage1"):
        init_dit_uri(cfg, "stage2")
    dit = tmp_path / "models" / "tiny-stage1" / "dit"
    dit.mkdir(parents=True)
    (dit / "config.json").write_text("{}")
    assert init_dit_uri(cfg, "stage2") == f"{model_uri(cfg, 'stage1')}/dit"


def test_local_paths_are_made_absolute_in_the_driver(tmp_path, monkeypatch):
    """Workers run in Ray's directories, not the driver's: relative paths must not reach them."""
    from realrestorer.train.stages import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny", ["storage.root=runs/a", "model.pretrained_dit_path=~/dit", "train.stage1.init_from=models/b"])
    out = with_absolute_paths(cfg)
    assert out.storage.root == str(tmp_path / "runs" / "a")
    assert out.model.pretrained_dit_path == str(Path.home() / "dit")
    assert out.train.stage1.init_from == str(tmp_path / "models" / "b")
    assert out.train.stage2.init_from == "stage1" and out.data.output is None and out.model.vae_path is None
    remote = with_absolute_paths(load_config("tiny", ["storage.root=s3://bucket/runs"]))
    assert remote.storage.root == "s3://bucket/runs"


def test_a_stage_without_its_pairs_or_weights_fails_before_workers_start(tmp_path):
    from realrestorer.data.shards import write_pairs
    from realrestorer.model import MissingWeightsError
    from realrestorer.train.stages import check_stage_inputs
    from tests.train.conftest import make_pairs

    cfg = load_config("tiny", [f"storage.root={tmp_path}"])
    with pytest.raises(ValueError, match=r"needs 'synthetic' training pairs, but .*pairs has none \(build it first: jobs/synthesize.py"):
        check_stage_inputs(cfg, "stage1")
    write_pairs(make_pairs("train", 1, seed=0, tasks=("noise",)), str(tmp_path / "datasets" / "pairs"))
    check_stage_inputs(cfg, "stage1")
    # Stage 2 asks for proxy pairs the builder made only without a real source; this set has synthetic pairs alone.
    with pytest.raises(ValueError, match=r"train.stage2.kinds needs 'proxy' training pairs, but .* has synthetic$"):
        check_stage_inputs(cfg, "stage2")
    real = load_config("tiny", [f"storage.root={tmp_path}", "train.stage2.kinds=[synthetic, real]"])
    with pytest.raises(ValueError, match="needs 'real'"):
        check_stage_inputs(real, "stage2")
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text("{}")
    missing = load_config("tiny", [f"storage.root={tmp_path}", f"model.text_encoder_path={tmp_path / 'encoder'}"])
    with pytest.raises(MissingWeightsError, match=r"^model.text_encoder_path: .*encoder/model.safetensors \(or pytorch_model.bin\) not found$"):
        check_stage_inputs(missing, "stage1")


def test_pairs_smaller_than_the_model_resolution_are_refused():
    with pytest.raises(ConfigError, match="data.resolution 64 is below model.resolution 128"):
        load_config("tiny", ["model.resolution=128"])


def test_consolidation_reserves_the_memory_of_the_merged_weights():
    """The 12 B DiT merges to 48 GB of fp32 weights: the task asks for those plus a one-shard margin (about 59 GB)
    on one node, not landing on a small head node to be killed after training. Where no node is that large it
    takes the largest and says so, rather than waiting for a node that may never come."""
    from realrestorer.train.stages import consolidation_memory

    need, warning = consolidation_memory(12 * 10**9, [32e9, 512e9])
    assert 58e9 < need < 60e9 and warning is None
    need, warning = consolidation_memory(12 * 10**9, [32e9, 40e9])
    assert need == 40e9
    assert warning.startswith("consolidating the 12.00 B-parameter DiT needs about 59 GB") and "largest node offers 40 GB" in warning
    small, warning = consolidation_memory(2_400_000, [4e9])
    assert small == 2 * 4 * 2_400_000 + 2**30 and warning is None
