"""Training on a local Ray cluster with DeepSpeed on CPU (gloo): worker-count invariance, resume, consolidation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realrestorer.train.stages import train_stage
from tests.train.conftest import micro_config

pytestmark = pytest.mark.slow

# 36 training pairs; a global batch of 4 in micro-batches of 2.
RUN = [
    "train.stage1.batch_size=4", "train.stage1.micro_batch_size=2", "train.stage1.cpus_per_worker=1",
    "train.stage1.warmup_steps=1", "train.stage1.log_every=1", "train.stage1.shuffle_buffer=0", "train.stage1.max_failures=0",
]


def _run(root: Path, dataset: str, name: str, *overrides: str) -> dict:
    cfg = micro_config(str(root), dataset, *RUN, f"train.stage1.run_name={name}", *overrides)
    return train_stage(cfg, "stage1")


@pytest.fixture(scope="module")
def one_and_two_workers(ray_session, uniform_dataset, tmp_path_factory):
    """The same 3 steps of ZeRO-2 on one worker (accumulating 2 micro-batches) and on two (one each).

    Every row is the same pair, so both runs see the same global batches whichever rows Ray Data hands to which
    worker; the noise of each micro-batch depends on its global index only, so the two workers' gradients differ
    and must be averaged exactly as one worker accumulates them. The one worker also compiles its DiT blocks
    (`train.stage1.compile`), which must not change what it learns either.
    """
    root = tmp_path_factory.mktemp("zero2")
    common = ("train.stage1.steps=3", "train.stage1.checkpoint_every=3", "train.stage1.zero_stage=2")
    one = _run(root, uniform_dataset, "one", "train.stage1.num_workers=1", "train.stage1.compile=true", *common)
    two = _run(root, uniform_dataset, "two", "train.stage1.num_workers=2", *common)
    return one, two


def test_two_zero2_workers_match_one_compiled_worker_on_the_same_global_batch(one_and_two_workers):
    one, two = one_and_two_workers
    assert one["steps"] == two["steps"] == 3
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-4)
    # The val PSNR is a function of the weights alone: equal PSNR after 3 updates means equal updates.
    assert two["metrics"]["val/mean/psnr"] == pytest.approx(one["metrics"]["val/mean/psnr"], abs=1e-3)
    assert one["metrics"]["val/mean/psnr"] != pytest.approx(one["metrics"]["val/haze/psnr"], abs=1e-3)


def _module_states(checkpoint_path: str) -> dict[str, torch.Tensor]:
    import ray

    @ray.remote(num_cpus=1)
    def read(path: str) -> dict[str, torch.Tensor]:
        # The engine's module as DeepSpeed saved it, read in a worker: deepspeed stays out of the test process.
        states = torch.load(Path(path) / "deepspeed" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k[len("dit."):]: v.float() for k, v in states["module"].items() if k.startswith("dit.")}

    return ray.get(read.remote(checkpoint_path))


def test_consolidated_model_serves_the_trained_weights(one_and_two_workers, uniform_dataset):
    from realrestorer.model import load_restorer
    from realrestorer.train import validate

    from safetensors.torch import load_file

    from realrestorer.train.loop import EMA_FILE

    _, two = one_and_two_workers
    served = load_restorer(two["model_uri"])
    trained = _module_states(two["checkpoint"])
    served_state = served.dit.state_dict()
    assert set(served_state) == set(trained)
    # The tiny preset's stage 1 keeps an EMA of the weights: the average is what validates and what ships.
    shipped = {k: v.float() for k, v in load_file(str(Path(two["checkpoint"]) / EMA_FILE)).items()}
    assert shipped and all(torch.equal(served_state[k], shipped[k]) for k in shipped)
    assert any(not torch.equal(shipped[k], trained[k]) for k in shipped)  # the average, not the last step's weights
    assert all(torch.equal(served_state[k], trained[k]) for k in set(trained) - set(shipped))
    assert any(v.abs().sum() > 0 for k, v in served_state.items() if k.startswith("proj_out"))

    card = json.loads((Path(two["model_uri"]) / "model_card.json").read_text())
    assert card["stage"] == "stage1" and card["step"] == 3 and card["preset"] == "tiny"
    assert card["dit_parameters"] == sum(v.numel() for v in served_state.values()) and "dit_parameters" not in card["metrics"]
    assert card["metrics"]["val/mean/psnr"] == pytest.approx(two["metrics"]["val/mean/psnr"])

    # The served model reproduces the trainer's own validation numbers.
    val = validate.load_val_set(uniform_dataset, ["synthetic"], 4)
    clean, degraded = validate.decode_val_set(val)
    _, restored = validate.restore_val_set(served, val, degraded, None, 2, seed=0)
    psnr, _ = validate.image_scores(clean, restored)
    assert float(np.mean(psnr)) == pytest.approx(two["metrics"]["val/mean/psnr"], abs=1e-3)


def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_session, pair_dataset, tmp_path, monkeypatch):
    from realrestorer.train.loop import FAIL_AT_STEP_ENV

    # ZeRO-1 (the small preset's stage): its partitioned optimizer state is saved, resumed and consolidated here.
    steps = ("train.stage1.steps=5", "train.stage1.checkpoint_every=2", "train.stage1.num_workers=2", "train.stage1.zero_stage=1",
             "train.stage1.ema_decay=null")
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "3")
    with pytest.raises(Exception, match="(?i)fail|died|exit"):
        _run(tmp_path, pair_dataset, "killed", *steps)
    run_dir = tmp_path / "train" / "killed"
    assert sorted(p.name for p in run_dir.glob("step-*")) == ["step-00000002"]

    result = _run(tmp_path, pair_dataset, "killed", *steps)
    assert result["steps"] == 5
    state = json.loads((run_dir / "step-00000005" / "train_state.json").read_text())
    # Attempt 1 started at step 0 and died at 3; attempt 2 resumed from the step-2 checkpoint.
    assert state["starts"] == [0, 2]
    # 36 pairs / 2 workers = 18 per worker = 9 micro-batches of 2 per epoch; 5 steps took 5 of them.
    assert (state["epoch"], state["position"]) == (0, 5)
    # Without EMA the served weights are the trained ones, gathered from the ZeRO-1 partitions.
    from realrestorer.model import load_restorer

    served = load_restorer(result["model_uri"]).dit.state_dict()
    trained = _module_states(result["checkpoint"])
    assert set(served) == set(trained) and all(torch.equal(served[k], trained[k]) for k in trained)

    # Run again on one worker, its ZeRO-1 optimizer state (two partitions) could not load: refused up front.
    from realrestorer.train.stages import check_resume_workers

    again = micro_config(str(tmp_path), pair_dataset, *RUN, "train.stage1.run_name=killed", *steps)
    check_resume_workers(again, "stage1")
    fewer = again.model_copy(update={"train": again.train.model_copy(update={
        "stage1": again.train.stage1.model_copy(update={"num_workers": 1, "batch_size": 2})})})
    with pytest.raises(ValueError, match=r"^run killed was checkpointed on 2 workers.*num_workers=2"):
        check_resume_workers(fewer, "stage1")


def test_zero3_partitions_train_and_consolidate_as_zero2_does(ray_session, uniform_dataset, tmp_path):
    """ZeRO-3 with gradient checkpointing (the flux-12b preset's stage) on two workers: the updates and the served
    model of one ZeRO-2 worker that keeps its activations. Recomputing a block in backward gathers its partitioned
    weights a second time; the gradients must not change."""
    from realrestorer.model import load_restorer

    common = ("train.stage1.steps=3", "train.stage1.checkpoint_every=3", "train.stage1.ema_decay=null")
    zero2 = _run(tmp_path, uniform_dataset, "zero2", "train.stage1.num_workers=1", "train.stage1.zero_stage=2", *common)
    zero3 = _run(tmp_path, uniform_dataset, "zero3", "train.stage1.num_workers=2", "train.stage1.zero_stage=3",
                 "train.stage1.grad_checkpointing=true", *common)
    assert zero3["steps"] == 3
    assert zero3["metrics"]["loss"] == pytest.approx(zero2["metrics"]["loss"], rel=1e-4)
    assert zero3["metrics"]["val/mean/psnr"] == pytest.approx(zero2["metrics"]["val/mean/psnr"], abs=1e-3)
    # The consolidated model gathers every partition: the same weights as the unpartitioned run, all updated.
    served2 = load_restorer(zero2["model_uri"]).dit.state_dict()
    served3 = load_restorer(zero3["model_uri"]).dit.state_dict()
    assert set(served3) == set(served2)
    for name, value in served2.items():
        torch.testing.assert_close(served3[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert any(v.abs().sum() > 0 for k, v in served3.items() if k.startswith("proj_out"))



def test_zero3_workers_meeting_different_prompts_keep_their_collectives_in_step(ray_session, pair_dataset, tmp_path):
    """Nine tasks' prompts over two ZeRO-3 workers: each rank encodes a prompt when it first meets it, so the
    ranks run the text encoder at different steps. Partitioned, its forward would be a collective on one rank
    only (gloo aborted with "collective mismatch"); only the DiT is partitioned, and the run trains."""
    from realrestorer.model import load_restorer

    result = _run(tmp_path, pair_dataset, "zero3-prompts", "train.stage1.num_workers=2", "train.stage1.zero_stage=3",
                  "train.stage1.steps=3", "train.stage1.checkpoint_every=3", "train.stage1.ema_decay=null")
    assert result["steps"] == 3 and np.isfinite(result["metrics"]["loss"])
    served = load_restorer(result["model_uri"]).dit.state_dict()
    assert served["proj_out.weight"].abs().sum() > 0  # zero at the start: the update reached the served weights

def test_a_run_on_object_storage_checkpoints_resumes_and_serves_from_s3(ray_session, s3_server, tmp_path, monkeypatch):
    """A cluster's storage: shards, Ray Train checkpoints and the consolidated model all under one s3:// root."""
    import s3fs

    from realrestorer.data.shards import write_pairs
    from realrestorer.model import load_restorer
    from realrestorer.train.loop import FAIL_AT_STEP_ENV
    from tests.train.conftest import make_pairs

    root = "s3://test-bucket/cluster"
    dataset = f"{root}/datasets/pairs"
    write_pairs(make_pairs("train", 2, seed=1) + make_pairs("val", 1, seed=2), dataset)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, use_listings_cache=False)
    steps = ("train.stage1.steps=4", "train.stage1.checkpoint_every=2", "train.stage1.ema_decay=null")

    monkeypatch.setenv(FAIL_AT_STEP_ENV, "3")
    with pytest.raises(Exception, match="(?i)fail|died|exit"):
        _run(root, dataset, "s3run", *steps)
    run_dir = "test-bucket/cluster/train/s3run"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run_dir) if "step-" in p) == ["step-00000002"]
    monkeypatch.delenv(FAIL_AT_STEP_ENV)

    result = _run(root, dataset, "s3run", *steps)
    assert result["steps"] == 4
    assert result["model_uri"] == f"{root}/models/s3run"
    final = f"{run_dir}/step-00000004"
    assert json.loads(fs.cat(f"{final}/train_state.json"))["starts"] == [0, 2]
    # The model a server would load from s3 holds the weights the last checkpoint trained.
    fs.get(final, str(tmp_path / "final"), recursive=True)
    trained = _module_states(str(tmp_path / "final"))
    served = load_restorer(result["model_uri"]).dit.state_dict()
    assert set(served) == set(trained) and all(torch.equal(served[k], trained[k]) for k in trained)
    card = json.loads(fs.cat("test-bucket/cluster/models/s3run/model_card.json"))
    assert card["data_manifest_sha256"] is None and card["data_uri"] == dataset and card["step"] == 4


def test_consolidation_keeps_the_trained_dtype_for_serving(one_and_two_workers, tmp_path):
    """A bf16-trained model (the GPU presets) is saved with fp32 master weights but served in bf16, as trained."""
    import ray
    import ray.train

    from realrestorer.config import PipelineConfig
    from realrestorer.model import load_restorer
    from realrestorer.train.stages import consolidate

    _, two = one_and_two_workers
    cfg = json.loads((Path(two["model_uri"]) / "model_card.json").read_text())["config"]
    cfg["model"]["dtype"] = "bfloat16"
    card = {"stage": "stage1", "preset": "tiny"}
    out = str(tmp_path / "bf16")
    ray.get(ray.remote(num_cpus=1)(consolidate).remote(ray.train.Checkpoint(two["checkpoint"]), cfg, card, out))
    served = load_restorer(out)
    assert served.dit.dtype == torch.bfloat16
    assert PipelineConfig.model_validate(cfg).model.model_copy(update={"pretrained_dit_path": None}) == served.cfg.model_copy(
        update={"pretrained_dit_path": None})
    fp32 = load_restorer(two["model_uri"]).dit.state_dict()
    for name, value in served.dit.state_dict().items():
        assert torch.equal(value, fp32[name].to(torch.bfloat16)), name
