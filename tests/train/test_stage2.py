"""Stage 2 on a local Ray cluster: it starts from stage 1's consolidated model and mixes synthetic with proxy pairs."""

from __future__ import annotations

import pytest

from realrestorer.data.shards import write_pairs
from realrestorer.train.stages import train_stage
from tests.train.conftest import make_pairs, micro_config

pytestmark = pytest.mark.slow


def test_stage2_mixes_proxy_pairs_after_stage1(ray_session, tmp_path):
    dataset = str(tmp_path / "pairs")
    proxy = [{**row, "kind": "proxy"} for row in make_pairs("train", 1, seed=5) + make_pairs("val", 1, seed=6)]
    write_pairs(make_pairs("train", 2, seed=1) + make_pairs("val", 1, seed=2) + proxy, dataset)
    common = ["steps=2", "warmup_steps=1", "batch_size=4", "micro_batch_size=4", "cpus_per_worker=1", "checkpoint_every=2",
              "log_every=1", "num_val_per_task=1"]
    cfg = micro_config(str(tmp_path / "out"), dataset, "data.mixing.final_ratio=0.25",
                       *[f"train.stage1.{c}" for c in common], *[f"train.stage2.{c}" for c in common])
    first = train_stage(cfg, "stage1")
    second = train_stage(cfg, "stage2")
    assert second["steps"] == 2 and second["run_name"] == "tiny-stage2"
    # The synthetic share decays over the first half of the planned steps: the last step mixes at the final ratio.
    assert second["metrics"]["synthetic_ratio"] == pytest.approx(0.25)
    # Validation covers both kinds: the nine synthetic tasks and the proxy pairs' groups.
    assert "val/haze/psnr" in second["metrics"]
    assert any(k.startswith("val/proxy-") for k in second["metrics"])
    assert "val/proxy-" not in "".join(first["metrics"])


def test_a_killed_stage2_worker_resumes_at_its_place_in_both_sources(ray_session, tmp_path, monkeypatch):
    """Each of two workers draws synthetic and proxy rows at its own random rate. Killed after its step-2 checkpoint
    and run again, the run must go on from where each worker had read each source, with the draws it would have
    made: it ends as the uninterrupted run ends, loss for loss. (It used to restart both sources from the top.)"""
    import json

    from realrestorer.train.loop import FAIL_AT_STEP_ENV

    dataset = str(tmp_path / "pairs")
    # Two proxy training pairs in one file, read whole by both workers, one pair each: every proxy draw after a
    # worker's first starts another pass. The synthetic pairs in two files, one a worker (stages.rank_files).
    proxy = [{**row, "kind": "proxy"} for row in make_pairs("train", 1, seed=5, tasks=("noise", "haze"))
             + make_pairs("val", 1, seed=6)]
    write_pairs(make_pairs("train", 1, seed=1) + make_pairs("val", 1, seed=2) + proxy, dataset)
    write_pairs(make_pairs("train", 1, seed=3), dataset, index=1)
    common = ["warmup_steps=1", "batch_size=4", "micro_batch_size=2", "cpus_per_worker=1", "checkpoint_every=2",
              "log_every=1", "num_val_per_task=1", "max_failures=0", "ema_decay=null"]
    cfg = micro_config(str(tmp_path / "out"), dataset, "data.mixing.final_ratio=0.25", "train.stage1.steps=2",
                       "train.stage2.steps=4", "train.stage2.num_workers=2", "train.stage2.shuffle_buffer=8",
                       *[f"train.stage1.{c}" for c in common], *[f"train.stage2.{c}" for c in common])
    train_stage(cfg, "stage1")

    def named(name: str):
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={
            "stage2": cfg.train.stage2.model_copy(update={"run_name": name})})})

    from realrestorer.train.stages import training_datasets

    datasets = training_datasets(named("whole"), cfg.train.stage2)
    assert sorted(datasets) == ["real", "synthetic-0", "synthetic-1"]
    whole = train_stage(named("whole"), "stage2")
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "3")
    with pytest.raises(Exception, match="(?i)fail|died|exit"):
        train_stage(named("killed"), "stage2")
    resumed = train_stage(named("killed"), "stage2")

    def state(name: str) -> dict:
        return json.loads((tmp_path / "out" / "train" / name / "step-00000004" / "train_state.json").read_text())

    assert state("killed")["starts"] == [0, 2] and state("whole")["starts"] == [0]
    # Two workers' positions, each {source: [pass, rows read in it]}; the proxy source has wrapped round.
    assert len(state("whole")["sources"]) == 2 and state("killed")["sources"] == state("whole")["sources"]
    assert max(worker["real"][0] for worker in state("whole")["sources"]) >= 1
    assert resumed["metrics"]["loss"] == pytest.approx(whole["metrics"]["loss"], rel=1e-6)
    assert resumed["metrics"]["val/mean/psnr"] == pytest.approx(whole["metrics"]["val/mean/psnr"], abs=1e-6)
