"""`jobs/train.py` as a user runs it: a subprocess driving a local Ray cluster with the tiny preset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.train.conftest import MICRO_MODEL

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_the_stages():
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--help"], capture_output=True, text=True, check=True)
    assert "--stage {stage1,stage2}" in done.stdout and "--set KEY=VALUE" in done.stdout


def test_bad_override_fails_fast_with_the_key_named():
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train.py"), "--stage", "stage1", "--set", "train.stage1.zero_stage=5"],
        capture_output=True, text=True,
    )
    assert done.returncode != 0 and "train.stage1.zero_stage" in done.stderr


def test_train_job_runs_stage1_on_local_ray(ray_session, mlflow_server, pair_dataset, tmp_path):
    overrides = [*MICRO_MODEL, f"storage.root={tmp_path}", f"data.output={pair_dataset}", f"tracking.uri={mlflow_server}",
                 "tracking.experiment_prefix=jobtest", "train.stage1.steps=2", "train.stage1.log_every=1",
                 "train.stage1.warmup_steps=1", "train.stage1.batch_size=4", "train.stage1.micro_batch_size=4",
                 "train.stage1.cpus_per_worker=1", "train.stage1.checkpoint_every=1"]
    command = [sys.executable, str(REPO / "jobs" / "train.py"), "--stage", "stage1", "--preset", "tiny"]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage stage1 · run tiny-stage1 · 2 steps" in done.stdout
    # Rank 0's progress lines reach the driver's output, the last at the planned step count.
    assert re.search(r"stage1 · step 1/2 \(50 %\) · loss [0-9.]+ · [0-9.]+ samples/s · 0 min \d\d s left", done.stdout)
    assert re.search(r"stage1 · step 2/2 \(100 %\) · .* · 0 min 00 s left", done.stdout), done.stdout[-3000:]
    # Once each: Ray Train's patched print in workers would also log the line to stderr.
    output = done.stdout + done.stderr
    assert output.count("stage1 · step 1/2 (50 %)") == 1 and output.count("stage1 · step 2/2 (100 %)") == 1, output[-3000:]
    # The val split holds one pair of each of the nine tasks: the summary counts wins over them.
    assert re.search(r"beats the identity baseline by more than 0.05 dB on \d of 9 tasks \(", done.stdout), done.stdout[-2000:]
    card = json.loads((tmp_path / "models" / "tiny-stage1" / "model_card.json").read_text())
    assert card["step"] == 2 and card["run_name"] == "tiny-stage1"
    assert sorted(p.name for p in (tmp_path / "train" / "tiny-stage1").glob("step-*")) == ["step-00000001", "step-00000002"]
    # The consolidated model restores a user's file with the command line, at the file's own size.
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((40, 60, 3), 90, np.uint8))
    restore = subprocess.run([sys.executable, "-m", "realrestorer.cli", "restore", str(tmp_path / "models" / "tiny-stage1"),
                              str(photo), "-o", str(tmp_path / "restored"), "--task", "haze", "--steps", "2", "--quiet"],
                             capture_output=True, text=True, timeout=300)
    assert restore.returncode == 0 and "restored 1 of 1" in restore.stdout, restore.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "restored" / "photo.png")).shape == (40, 60, 3)
    # The benchmark of large photos runs on it: the plain resize up from 64² blurs what keeping the detail keeps.
    bench = subprocess.run([sys.executable, str(REPO / "benchmarks" / "restore_detail.py"), "--model",
                            str(tmp_path / "models" / "tiny-stage1"), "--tasks", "haze", "--steps", "1"],
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    result = json.loads(bench.stdout.strip().splitlines()[-1])
    assert len(result["photos"]) >= 2 and result["psnr"]["haze"]["keep_detail"] > result["psnr"]["haze"]["resized"]

    import mlflow

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("jobtest-stage1")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["train_run"] == "tiny-stage1" and run.data.params["train.stage1.steps"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert {"samples_per_s", "tokens_per_s", "lr", "val/mean/psnr", "val/haze/ssim", "identity/haze/psnr"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert {"model_card.json", "config.json", "samples/step-00000002.png"} <= artifacts
