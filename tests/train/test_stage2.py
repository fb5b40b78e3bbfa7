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
