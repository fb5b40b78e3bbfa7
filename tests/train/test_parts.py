"""Pieces of the trainer below a full Ray Train run: batches, seeds, EMA, step cost, validation shares, dataset
layout (some on a local Ray session, for Ray Data)."""

from __future__ import annotations

from pathlib import Path

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from realrestorer.config import load_config
from realrestorer.data.config import MixingConfig
from realrestorer.data.mixing import MixingReader
from realrestorer.data.shards import encode_image
from realrestorer.train.augment import augment_pairs, step_seed
from realrestorer.train.batches import PairCollate, decode_pairs, mixed_micro_batches
from realrestorer.train.ema import EMA
from realrestorer.train.throughput import dit_step_cost, rates
from realrestorer.train.validate import image_scores, per_group, sample_grid


def test_decoded_pairs_collate_to_unit_range_tensors():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 2, 8, 12, 3), dtype=np.uint8)
    batch = {
        "clean": np.array([encode_image(i) for i in images[0]], dtype=object),
        "degraded": np.array([encode_image(i) for i in images[1]], dtype=object),
        "prompt": np.array(["a", "b"], dtype=object),
        "task": np.array(["noise", "haze"], dtype=object),
    }
    decoded = decode_pairs(batch)
    assert decoded["clean"].shape == (2, 8, 12, 3) and np.array_equal(decoded["clean"], images[0])
    out = PairCollate()(decoded)
    assert out["clean"].shape == (2, 3, 8, 12) and out["clean"].dtype == torch.float32
    assert torch.allclose(out["degraded"][1].permute(1, 2, 0) * 255, torch.from_numpy(images[1][1]).float())
    assert out["prompts"] == ["a", "b"] and out["tasks"] == ["noise", "haze"]


def test_pairs_of_different_sizes_are_refused():
    small, large = np.zeros((8, 8, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    batch = {key: np.array([encode_image(small), encode_image(large)], dtype=object) for key in ("clean", "degraded")}
    batch.update(prompt=np.array(["", ""], dtype=object), task=np.array(["noise", "noise"], dtype=object))
    with pytest.raises(ValueError, match=r"^training pairs must share one size to be batched; got sizes \[\(8, 8\), \(16, 16\)\]"):
        decode_pairs(batch)
    from realrestorer.train.validate import decode_val_set

    with pytest.raises(ValueError, match="^validation pairs must share one size"):
        decode_val_set({"clean": list(batch["clean"]), "degraded": list(batch["degraded"])})


def test_step_seeds_are_stable_and_distinct():
    seeds = {(s, m): step_seed(0, s, m) for s in range(20) for m in range(4)}
    assert len(set(seeds.values())) == len(seeds)
    assert step_seed(0, 3, 1) == seeds[(3, 1)]
    assert step_seed(1, 3, 1) != seeds[(3, 1)]
    assert 0 <= seeds[(0, 0)] < 2**63


class _RecordingReader(MixingReader):
    """A MixingReader that notes the (step, synthetic share) of every batch it hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, float]] = []

    def __next__(self):
        batch = super().__next__()
        self.seen.append((batch["step"], batch["synthetic_ratio"]))
        return batch


def test_augmentation_turns_both_images_of_a_pair_alike():
    clean = torch.rand(64, 3, 8, 8)
    degraded = 1.0 - clean.roll(1, dims=-1)  # a pixelwise-plus-shift relation the same turn must keep

    def views(mode, seed=0):
        return augment_pairs(clean, degraded, mode, torch.Generator().manual_seed(seed))

    for mode, expected in (("hflip", 2), ("dihedral", 8)):
        c, d = views(mode)
        seen = set()
        for i in range(len(c)):
            # Which flip/turn made this clean image; degraded must be the same flip/turn of its original.
            index = next(k for k, view in enumerate(_dihedral(clean[i])) if torch.equal(view, c[i]))
            assert torch.equal(_dihedral(degraded[i])[index], d[i])
            seen.add(index)
        assert len(seen) == expected
        assert torch.equal(views(mode)[0], c) and not torch.equal(views(mode, seed=1)[0], c)  # seeded
    # Non-square pairs keep their shape (flips only); 'none' is the identity; a typo is refused.
    wide = torch.rand(16, 3, 4, 8)
    assert augment_pairs(wide, wide, "dihedral", torch.Generator())[0].shape == wide.shape
    assert augment_pairs(clean, degraded, "none", torch.Generator())[0] is clean
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_pairs(clean, degraded, "rotate", torch.Generator())


def _dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    """The eight flips and quarter turns of a C×H×W image."""
    turns = [image.rot90(k, (-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


def test_a_resumed_stage2_stream_picks_up_the_mixing_schedule_at_its_step():
    image = encode_image(np.zeros((4, 4, 3), np.uint8))
    rows = {kind: [{"clean": image, "degraded": image, "prompt": "p", "task": "noise", "kind": kind}]
            for kind in ("synthetic", "proxy")}
    cfg, num_steps, num_accum = MixingConfig(web_augment_prob=0.0), 10, 2

    def stream(first_step: int, num_micro: int) -> list[tuple[int, float]]:
        reader = _RecordingReader(rows["synthetic"], rows["proxy"], cfg, 2, num_steps, start_step=first_step)
        micro = mixed_micro_batches(reader, first_step, num_accum)
        counts = [next(micro)[1] for _ in range(num_micro)]
        assert counts == list(range(first_step * num_accum + 1, (first_step + num_micro // num_accum) * num_accum + 1))
        return reader.seen

    uninterrupted = stream(0, num_steps * num_accum)
    assert [step for step, _ in uninterrupted[::num_accum]] == list(range(num_steps))
    assert uninterrupted[0][1] == 1.0 and uninterrupted[-1][1] == pytest.approx(0.2)
    # Resuming from a checkpoint at step 4 (the loop passes its step and the stage's planned steps).
    assert stream(4, (num_steps - 4) * num_accum) == uninterrupted[4 * num_accum:]


def test_a_resumed_stage2_reader_goes_on_with_the_same_rows_draws_and_augmentation():
    """Stopped after 7 batches and made again from the saved draw count and source positions, the reader hands out
    what the uninterrupted one would have: the same synthetic/real picks, the same rows from each source (across
    pass ends: 5 synthetic and 3 real rows), the same web re-encoding."""
    rng = np.random.default_rng(0)

    def rows(kind: str, n: int) -> list[dict]:
        images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]
        return [{"clean": encode_image(i), "degraded": encode_image(i), "prompt": f"{kind}{k}", "task": "noise",
                 "kind": kind} for k, i in enumerate(images)]

    synthetic, real = rows("synthetic", 5), rows("proxy", 3)
    cfg = MixingConfig(start_ratio=0.6, final_ratio=0.4, web_augment_prob=0.5)

    def reader(**kwargs) -> MixingReader:
        return MixingReader(synthetic, real, cfg, 3, 12, seed=11, **kwargs)

    whole = reader()
    uninterrupted = [next(whole) for _ in range(12)]
    first = reader()
    for _ in range(7):
        next(first)
    saved = first.positions()
    assert saved["synthetic"][0] + saved["real"][0] >= 1  # a source has wrapped round at least once
    again = reader(start_step=7, draws=7, positions=saved)
    for expected in uninterrupted[7:]:
        batch = next(again)
        assert batch["prompt"] == expected["prompt"] and batch["step"] == expected["step"]
        np.testing.assert_array_equal(batch["degraded"], expected["degraded"])
    assert any(not np.array_equal(b["degraded"], b["clean"]) for b in uninterrupted)  # augmentation did happen
    # Without the positions (as before), the stream restarts its sources and differs.
    fresh = reader(start_step=7, draws=7)
    assert [next(fresh)["prompt"] for _ in range(5)] != [b["prompt"] for b in uninterrupted[7:12]]


def test_stage2_source_positions_resume_per_worker():
    from realrestorer.train.batches import resume_sources

    state = {"sources": [{"synthetic": [1, 10], "real": [0, 4]}, {"synthetic": [1, 12], "real": [0, 2]}]}
    assert resume_sources(state, 1, 2) == {"synthetic": [1, 12], "real": [0, 2]}
    # On four workers (ZeRO-0 only) each share is half as long: the rows read so far scale with it.
    assert resume_sources(state, 3, 4) == {"synthetic": [1, 6], "real": [0, 1]}
    assert resume_sources({"step": 3}, 0, 2) is None


def test_ema_follows_the_weights_and_swaps_back():
    module = torch.nn.Linear(3, 2)
    start = module.weight.detach().clone()
    ema = EMA(module, decay=0.5)
    with torch.no_grad():
        module.weight.add_(1.0)
    ema.update(module)
    assert torch.allclose(ema.shadow["weight"], start + 0.5)
    trained = module.weight.detach().clone()
    with ema.swapped_in(module):
        assert torch.allclose(module.weight, start + 0.5)
    assert torch.equal(module.weight, trained)
    with pytest.raises(ValueError, match="decay"):
        EMA(module, decay=1.0)


def test_step_cost_counts_flops_and_tokens_of_the_dit():
    cfg = load_config("tiny").model
    cost = dit_step_cost(cfg)
    assert cost.tokens_per_sample == 2 * (cfg.resolution // cfg.grid) ** 2
    num_params = 2_386_480
    # Matmul FLOPs of forward + backward are about 6 per parameter per token (modulation runs once per sample).
    seq = cost.tokens_per_sample + cfg.max_text_tokens
    assert 0.5 * 6 * num_params * seq < cost.flops_per_sample < 1.5 * 6 * num_params * seq
    # The usual 6·N·T estimate counts every weight on every token; the modulation weights act once per sample.
    assert cost.flops_6nt_per_sample == 6 * num_params * seq
    assert cost.flops_6nt_per_sample > 1.1 * cost.flops_per_sample
    deeper = dit_step_cost(cfg.model_copy(update={"dit": cfg.dit.model_copy(update={"num_single_layers": 8})}))
    assert deeper.flops_per_sample > 1.3 * cost.flops_per_sample


def _bf16_sums(precision: str) -> dict:
    script = Path(__file__).with_name("bf16_sums.py")
    done = subprocess.run([sys.executable, str(script), precision], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_micro_batch_gradients_sum_in_fp32_under_bf16():
    """A bf16 engine (DeepSpeed's GPU precision, here on CPU) accumulating 8 micro-batches: one with gradient 1,
    seven with 1e-3. Summed in bf16 the small ones vanish (each is under 1/256 of the running sum); the trainer's
    config sums in fp32 and the step sees all of them. Its checkpoint still consolidates to the fp32 master."""
    exact = (1.0 + 7 * float(torch.tensor(1e-3, dtype=torch.bfloat16))) / 8  # DeepSpeed averages the micro-batches
    trainer, without = _bf16_sums("fp32"), _bf16_sums("bf16")
    for zero in ("2", "3"):
        assert without[zero]["norm"] == pytest.approx(1 / 8, rel=1e-6)
        assert trainer[zero]["norm"] == pytest.approx(exact, rel=1e-5)
        # AdamW's first step moves the weight by about lr = 1e-5: kept by the fp32 master, lost in the bf16 module.
        assert trainer[zero]["module_dtype"] == "torch.bfloat16" and trainer[zero]["module"] == 1.0
        assert trainer[zero]["master"] == pytest.approx(1.0 - 1e-5, abs=1e-7)


def test_rates_report_mfu_only_with_a_known_peak():
    cost = dit_step_cost(load_config("tiny").model)
    cpu = rates(cost, num_samples=32, seconds=2.0, num_devices=1, peak=None)
    assert cpu["samples_per_s"] == 16 and cpu["tokens_per_s"] == 16 * cost.tokens_per_sample and "mfu" not in cpu
    assert "mfu_6nt" not in cpu
    gpu = rates(cost, num_samples=32, seconds=2.0, num_devices=2, peak=1e12)
    assert gpu["mfu"] == pytest.approx(16 * cost.flops_per_sample / 2e12)
    assert gpu["mfu_6nt"] == pytest.approx(16 * cost.flops_6nt_per_sample / 2e12)
    with pytest.raises(ValueError, match="positive"):
        rates(cost, 0, 1.0, 1, None)


def test_validation_scores_and_grid():
    rng = np.random.default_rng(0)
    clean = rng.random((4, 16, 16, 3), dtype=np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    psnr, ssim = image_scores(clean, np.stack([clean[0], noisy[1], noisy[2], noisy[3]]))
    assert psnr[0] == pytest.approx(100.0)
    assert 15 < psnr[1] < 25 and ssim[0] == pytest.approx(1.0) and ssim[1] < 0.95
    metrics = per_group(["haze", "haze", "rain", "rain"], psnr[1:].repeat(2)[:4], ssim[1:].repeat(2)[:4], "val")
    assert set(metrics) == {f"val/{g}/{m}" for g in ("mean", "haze", "rain") for m in ("psnr", "ssim")}
    grid = sample_grid(["haze", "haze", "rain", "rain"], noisy, clean, clean)
    assert grid.shape == (32, 48, 3) and grid.dtype == np.uint8


def test_score_table_counts_the_groups_that_beat_identity():
    from realrestorer.train.validate import score_table, wins

    metrics = {}
    # moiré's +0.03 dB is within the margin: an untrained bridge DiT, which starts at the identity, gets that much.
    for group, base, psnr in (("haze", 12.0, 14.5), ("moire", 26.0, 26.03), ("noise", 26.0, 25.9),
                              ("proxy-mixed", 18.0, 18.4), ("mean", 18.7, 19.6)):
        metrics.update({f"identity/{group}/psnr": base, f"val/{group}/psnr": psnr, f"val/{group}/ssim": 0.5})
    assert wins(metrics) == ["haze", "proxy-mixed"]  # the mean is not a group that wins
    table = score_table(metrics)
    assert "haze                           12.00   14.50   +2.50   0.500" in table
    assert table.splitlines()[-2].startswith("mean")  # the mean closes the table
    assert table.endswith("beats the identity baseline by more than 0.05 dB on 1 of 3 tasks (haze) "
                          "and 1 of 1 other groups (proxy-mixed)")


@pytest.mark.parametrize("num_pairs, batch_size, world", [(9, 2, 2), (10, 2, 3), (3, 4, 4), (80, 2, 32), (7, 7, 1)])
def test_validation_shares_are_whole_batches_of_the_one_worker_cut(num_pairs, batch_size, world):
    from realrestorer.train.validate import rank_batches

    shares = [rank_batches(num_pairs, batch_size, rank, world) for rank in range(world)]
    busiest = max(len(starts) for starts, _ in shares)
    assert all(per_rank == busiest for _, per_rank in shares) and len(shares[0][0]) == busiest
    assert [start for starts, _ in shares for start in starts] == list(range(0, num_pairs, batch_size))


def test_validation_shares_merge_back_in_val_set_order():
    from realrestorer.train.validate import merge_shares, rank_share

    groups = ["haze", "haze", "rain", "rain", "rain"]
    restored = np.random.default_rng(0).random((5, 4, 4, 3), dtype=np.float32)
    second = rank_share(groups, np.array([3, 4]), restored[3:])
    first = rank_share(groups, np.array([0, 1, 2]), restored[:3])
    assert set(first[1]) == {0, 2} and second[1] == {}  # only the grid's rows (each group's first pair) travel
    psnr, ssim, rows = merge_shares([(second[0], np.array([3.0, 4.0]), np.array([0.3, 0.4]), second[1]),
                                     (first[0], np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.1, 0.2]), first[1])], 5)
    assert psnr.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and ssim.tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]
    np.testing.assert_allclose(rows[2], restored[2], atol=0.5 / 255 + 1e-7)
    with pytest.raises(RuntimeError, match="cover 3 of 5 pairs"):
        merge_shares([(first[0], np.zeros(3), np.zeros(3), {})], 5)


def test_validation_shares_restore_what_one_worker_restores_in_lockstep():
    """Three ranks' shares of ten pairs, put together, are one worker's outputs (the noise flow draws each batch's
    noise from its seed); under lockstep (ZeRO-3) every rank runs the DiT as often as the busiest one."""
    from realrestorer.model import build_restorer
    from realrestorer.train.validate import restore_val_set
    from tests.train.conftest import MICRO_MODEL

    torch.manual_seed(0)
    restorer = build_restorer(load_config("tiny", [*MICRO_MODEL, "model.flow=noise"]).model).eval()
    degraded = np.random.default_rng(0).random((10, 32, 32, 3), dtype=np.float32)
    val = {"prompt": ["Please dehaze the image", "Please remove the rain"] * 5}
    calls = []
    restorer.dit.register_forward_pre_hook(lambda *_: calls.append(1))
    one_indices, one = restore_val_set(restorer, val, degraded, 2, 2, seed=5)
    assert one_indices.tolist() == list(range(10)) and len(calls) == 5 * 2
    parts, forwards = [], []
    for rank in range(3):
        calls.clear()
        parts.append(restore_val_set(restorer, val, degraded, 2, 2, seed=5, rank=rank, world=3, lockstep=True))
        forwards.append(len(calls))
    assert forwards == [2 * 2] * 3  # batches 2 + 2 + 1, and rank 2 runs one more, unscored
    assert [p[0].tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), one)
    assert not np.allclose(one[0], one[2])  # the outputs differ by batch: a misplaced share would show
    calls.clear()
    restore_val_set(restorer, val, degraded, 2, 2, seed=5, rank=2, world=3)
    assert len(calls) == 2  # without lockstep (ZeRO 0-2) a rank runs its own batches only


def test_validation_pairs_pool_held_out_splits_and_take_each_source_in_turn(ray_session, tmp_path):
    from realrestorer.data.shards import decode_image, write_pairs
    from realrestorer.train.validate import load_val_set

    def pair(split: str, source: str, task: str, index: int) -> dict:
        # The clean image's value names its source and its place in the source's rows.
        value = 10 * "ABC".index(source) + index
        clean = np.full((8, 8, 3), value, np.uint8)
        return {"split": split, "kind": "synthetic", "task": task, "clean": clean, "degraded": clean + 100,
                "source_uri": f"mem://{source}", "id": f"{source}{task}{index}", "params": {}}

    rows = [pair("val", "A", "blur", i) for i in range(5)] + [pair("test", "B", "blur", i) for i in range(5)]
    rows += [pair("test", "C", "blur", 0), pair("test", "B", "noise", 7)]
    # Stored out of order, two rows a shard: the choice must not depend on the order the shards are read in.
    order = np.random.default_rng(0).permutation(len(rows))
    for start in range(0, len(rows), 2):
        write_pairs([rows[i] for i in order[start:start + 2]], str(tmp_path), index=start)
    names = lambda val, group: [
        ("ABC"[v // 10], v % 10) for g, b in zip(val["group"], val["clean"]) if g == group for v in [int(decode_image(b)[0, 0, 0])]
    ]
    pooled = load_val_set(str(tmp_path), ["synthetic"], 4, split=["val", "test"])
    # One pair from each source in turn, not the first four of whichever source is listed first.
    assert names(pooled, "blur") == [("A", 0), ("B", 0), ("C", 0), ("A", 1)]
    assert names(pooled, "noise") == [("B", 7)]
    only_val = load_val_set(str(tmp_path), ["synthetic"], 4, split="val")
    assert names(only_val, "blur") == [("A", i) for i in range(4)] and set(only_val["group"]) == {"blur"}
    with pytest.raises(ValueError, match="split must be one or more of"):
        load_val_set(str(tmp_path), ["synthetic"], 4, split=["val", "holdout"])


def test_small_training_sets_are_read_once_and_large_ones_streamed(ray_session, pair_dataset, tmp_path):
    import json
    import shutil

    from ray.data.dataset import MaterializedDataset
    from realrestorer.train.config import StageConfig
    from realrestorer.data.shards import read_shards, write_pairs
    from realrestorer.train.stages import decoded_mb, training_datasets

    from tests.train.conftest import SIDE, make_pairs, micro_config

    stage = StageConfig()
    per_pair = 2 * 3 * SIDE**2 / 2**20
    # Without a manifest the pairs are counted in the shards' Parquet footers, stopping once past the limit.
    two_shards = tmp_path / "two"
    shutil.copytree(pair_dataset, two_shards)  # one train shard of 36 pairs
    write_pairs(make_pairs("train", 1, seed=5), str(two_shards), index=1)  # and one of 9
    cfg = micro_config(str(tmp_path), str(two_shards), f"data.resolution={SIDE}")
    assert decoded_mb(cfg, ["synthetic"]) == pytest.approx(45 * per_pair)
    assert decoded_mb(cfg, ["synthetic"], stop_above_mb=10 * per_pair) == pytest.approx(36 * per_pair)
    assert decoded_mb(cfg, ["real"]) == 0
    assert isinstance(training_datasets(cfg, stage)["train"], MaterializedDataset)
    root = tmp_path / "pairs"
    shutil.copytree(pair_dataset, root)
    cfg = micro_config(str(tmp_path), str(root), f"data.resolution={SIDE}")
    # The manifest's counts come first.
    counts = {"train": {"synthetic": {"blur": 20, "noise": 16}}}
    (root / "manifest.json").write_text(json.dumps({"counts": counts}))
    assert decoded_mb(cfg, ["synthetic"]) == pytest.approx(36 * per_pair)
    cached = training_datasets(cfg, stage)["train"]
    streamed = training_datasets(cfg, stage.model_copy(update={"cache_mb": 0}))["train"]
    assert isinstance(cached, MaterializedDataset)
    assert not isinstance(streamed, MaterializedDataset)
    # Same pairs either way.
    key = lambda row: row["clean"].tobytes()
    assert [key(r) for r in sorted(cached.take_all(), key=key)] == [key(r) for r in sorted(streamed.take_all(), key=key)]
    # The file groups the rows by task (four of each in turn); the cached set is shuffled row by row, the same
    # way every time, so a batch does not see one or two tasks (in real shards: one or two source images).
    file_order = [row["task"] for row in read_shards(str(root), split="train").take_all()]
    order = [row["task"] for row in cached.take_all()]
    assert file_order[:8] == ["blur"] * 4 + ["compression"] * 4
    assert sorted(order) == sorted(file_order) and len(set(order[:8])) >= 5
    assert order == [row["task"] for row in training_datasets(cfg, stage)["train"].take_all()]


def test_training_pairs_come_in_the_same_order_in_every_run(ray_session, tmp_path):
    # A job re-run under the same name resumes at a saved (epoch, position) in this order, so it must not depend
    # on which of Ray's read and decode tasks finish first (with many shards they finish in varying order).
    from realrestorer.data.shards import write_pairs
    from realrestorer.train.config import StageConfig
    from realrestorer.train.stages import training_datasets

    from tests.train.conftest import SIDE, make_pairs, micro_config

    root = tmp_path / "pairs"
    for index in range(12):
        write_pairs(make_pairs("train", 1, seed=10 + index), str(root), index=index)
    cfg = micro_config(str(tmp_path), str(root), f"data.resolution={SIDE}")
    for stage in (StageConfig(), StageConfig(cache_mb=0)):
        runs = [[row["degraded"].tobytes() for row in training_datasets(cfg, stage)["train"].iter_rows()] for _ in range(4)]
        assert len(runs[0]) == 108 and all(run == runs[0] for run in runs[1:]), f"cache_mb={stage.cache_mb}"


def test_progress_lines_count_steps_and_time_left_at_this_attempts_pace():
    from realrestorer.train.loop import progress_line

    metrics = {"loss": 0.5, "samples_per_s": 4.0}
    assert progress_line("stage1", 30, 300, 0, 60.0, metrics) == (
        "stage1 · step 30/300 (10 %) · loss 0.5000 · 4.0 samples/s · 9 min 00 s left")
    # A resumed attempt paces itself on its own steps: 10 steps in 20 s since step 100, 190 to go.
    assert progress_line("stage2", 110, 300, 100, 20.0, metrics).endswith("(37 %) · loss 0.5000 · 4.0 samples/s · 6 min 20 s left")
    assert progress_line("stage1", 100, 100, 100, 0.0, metrics).endswith("? left")


def test_mixed_sources_are_shuffled_and_split_between_workers(ray_session, pair_dataset):
    """Stage 2's sources: each worker keeps every world-th row of one shared shuffled order, a new one each pass."""
    from realrestorer.data.shards import read_shards
    from realrestorer.train.batches import RankRows

    # The file lists four pairs of one task, then four of the next: like a shard's crops of one source image.
    ds = read_shards(pair_dataset, split="train")
    ds.context.execution_options.preserve_order = True
    file_order = [row["degraded"] for row in ds.take_all()]
    key = {image: index for index, image in enumerate(file_order)}
    shares = [RankRows(ds.iterator(), rank, 2, shuffle_buffer=16, seed=3) for rank in (0, 1)]
    first = [[key[row["degraded"]] for row in share] for share in shares]
    second = [[key[row["degraded"]] for row in share] for share in shares]
    for passes in (first, second):
        # The two workers' rows split the set: none twice, none left out.
        assert sorted(passes[0] + passes[1]) == list(range(len(file_order)))
        assert passes[0] != sorted(passes[0])
        # A batch of 4 from the start of a share spans more than one file group of four.
        assert len({index // 4 for index in passes[0][:4]}) > 1
    assert first != second  # another order in the next pass
    # The same seed gives the same orders: a restarted job replays its stream.
    again = RankRows(ds.iterator(), 0, 2, shuffle_buffer=16, seed=3)
    assert [key[row["degraded"]] for row in again] == first[0]
    plain = [key[row["degraded"]] for row in RankRows(ds.iterator(), 0, 2)]
    assert plain == list(range(0, len(file_order), 2))
    # A resumed reader opens the pass it stopped in by number: the second pass without reading the first.
    resumed = RankRows(ds.iterator(), 1, 2, shuffle_buffer=16, seed=3)
    assert [key[row["degraded"]] for row in resumed.rows_of_pass(1)] == second[1]


def test_mixed_source_files_are_dealt_by_rows_or_not_at_all():
    from realrestorer.train.stages import rank_files

    files = [f"s3://b/train/synthetic-{i}.parquet" for i in range(6)]
    # Largest first, each to the worker with the fewest rows so far: 10+2+2 | 8+6.
    assert rank_files(files[:5], [10, 8, 6, 2, 2], 2) == [[files[0], files[3], files[4]], [files[1], files[2]]]
    # An empty file (every pair of a shard rejected) is left out; what is left must still be fair.
    assert rank_files(files[:5], [4, 0, 4, 4, 4], 2) == [[files[2], files[4]], [files[0], files[3]]]
    assert rank_files(files[:3], [4, 4, 4], 2) is None  # 8 against 4 rows: one worker would repeat its pairs twice as often
    assert rank_files(files[:3], [4, 0, 4], 3) is None  # a worker without a file
    assert rank_files(files[:1], [4], 2) is None


def test_a_worker_reads_its_own_files_whole_or_its_rows_of_the_whole_source():
    from realrestorer.train.batches import mixed_share

    dealt = ["real", "synthetic-0", "synthetic-1"]
    assert mixed_share("synthetic", 1, 2, dealt) == ("synthetic-1", 0, 1)
    assert mixed_share("real", 1, 2, dealt) == ("real", 1, 2)


def test_workers_get_their_own_files_of_a_mixed_source_where_they_deal_out_fairly(ray_session, tmp_path):
    """Stage 2 reads its mixed sources unsplit by Ray: where the files can be dealt out fairly each worker reads
    only its own, not the whole source once per worker; otherwise each reads the whole source."""
    from realrestorer.data.shards import read_table, write_pairs
    from realrestorer.train.stages import training_datasets
    from tests.train.conftest import make_pairs

    for index in range(4):
        write_pairs(make_pairs("train", 1, seed=index, tasks=("noise", "haze")), str(tmp_path), index=index)
    for index in range(3):
        write_pairs([{**row, "kind": "proxy"} for row in make_pairs("train", 1, seed=7 + index, tasks=("rain",))],
                    str(tmp_path), index=index)
    cfg = load_config("tiny", [f"storage.root={tmp_path}", f"data.output={tmp_path}", "train.stage2.num_workers=2",
                               "train.stage2.micro_batch_size=8"])
    datasets = training_datasets(cfg, cfg.train.stage2)
    # Four synthetic files of 2 pairs deal 4 | 4; three proxy files of 1 would deal 2 | 1, so the rows are split.
    assert sorted(datasets) == ["real", "synthetic-0", "synthetic-1"]
    # Which file each pair came from, by its degraded image's bytes (the datasets are materialized: small set).
    origin = {image: Path(uri).name for uri in sorted(tmp_path.glob("train/*.parquet"))
              for image in read_table(str(uri)).column("degraded").to_pylist()}
    read = {name: sorted({origin[row["degraded"]] for row in ds.take_all()}) for name, ds in datasets.items()}
    assert read["synthetic-0"] == ["synthetic-00001.parquet", "synthetic-00003.parquet"]
    assert read["synthetic-1"] == ["synthetic-00000.parquet", "synthetic-00002.parquet"]
    assert read["real"] == ["proxy-00000.parquet", "proxy-00001.parquet", "proxy-00002.parquet"]


def test_a_tracking_server_that_goes_away_costs_its_metrics_not_the_training(tmp_path, monkeypatch, capsys):
    import mlflow

    from realrestorer.tracking import start_local_server, stop_local_server
    from realrestorer.train.loop import Tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = start_local_server(tmp_path / "mlflow")
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("gone")).info.run_id
    tracker = Tracker(uri, run, rank=0)
    tracker.metrics({"loss": 0.5}, step=1)
    assert [m.value for m in client.get_metric_history(run, "loss")] == [0.5]
    stop_local_server(uri)
    tracker.metrics({"loss": 0.4}, step=2)  # no exception: the server is gone
    tracker.image(np.zeros((4, 4, 3), np.uint8), "grid.png")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1 and uri in warnings[0] and "training goes on" in warnings[0]
    assert tracker.client is None
    # Other ranks and tracking off log nothing and need no server.
    assert Tracker(uri, run, rank=1).client is None and Tracker(None, None, rank=0).client is None


def test_a_run_resumed_on_another_worker_count_keeps_its_place_in_the_epoch():
    from realrestorer.train.batches import resume_position

    # 2 workers had each taken 6 micro-batches of their half: 12 in all, 3 each on 4 workers, 12 on one.
    assert resume_position({"position": 6, "world": 2}, 4) == 3
    assert resume_position({"position": 6, "world": 2}, 1) == 12
    assert resume_position({"position": 5, "world": 2}, 4) == 2  # rounded down: a pair is seen again, none skipped
    assert resume_position({"position": 6, "world": 2}, 2) is None
    assert resume_position({"position": 6}, 3) is None  # checkpoints written before the count was recorded
