"""Validation on the held-out split: PSNR and SSIM per task, the identity baseline, and a sample grid."""

from __future__ import annotations

import bisect
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from realrestorer.data.shards import decode_stack, read_shards
from realrestorer.imagefile import to_uint8


def group_name(kind: str, task: str) -> str:
    """Metric group of a pair: the task for synthetic pairs, `<kind>-<task>` otherwise."""
    return task if kind == "synthetic" else f"{kind}-{task}"


VAL_COLUMNS = ("kind", "task", "source_uri", "id", "prompt", "clean", "degraded")


def load_val_set(root_uri: str, kinds: list[str], num_per_task: int, storage_cfg=None,
                 split: str | list[str] = "val") -> dict[str, list[Any]]:
    """Up to `num_per_task` held-out pairs of each (kind, task) of a dataset, read with Ray Data (`pick_val_pairs`)."""
    ds = read_shards(root_uri, split=split, kinds=kinds, storage_cfg=storage_cfg)
    picked = pick_val_pairs(ds.select_columns(list(VAL_COLUMNS)).iter_batches(batch_format="numpy", batch_size=256),
                            num_per_task)
    if not picked:
        raise ValueError(f"no {split} pairs of kinds {kinds} under {root_uri}")
    return picked


def pick_val_pairs(batches: Iterable[dict[str, np.ndarray]], num_per_task: int) -> dict[str, list[Any]]:
    """Up to `num_per_task` pairs of each (kind, task) from column batches (`VAL_COLUMNS`), as encoded bytes
    (small to ship to workers): {"group", "prompt", "clean", "degraded"} lists.

    The pairs of a group are taken from its source images in turn (one from each, then a second from
    each, ...), so a group's score does not rest on whichever photo its shards list first. The choice
    depends on the pairs alone, not on the order the batches come in: per group the sources with the
    smallest URIs (at most `num_per_task`), and per source the pairs with the smallest ids.
    """
    held: dict[str, dict[str, list[tuple[str, str, bytes, bytes]]]] = defaultdict(dict)
    for batch in batches:
        for kind, task, source, pair_id, prompt, clean, degraded in zip(*(batch[k] for k in VAL_COLUMNS)):
            sources = held[group_name(str(kind), str(task))]
            source, pair_id = str(source), str(pair_id)
            if source not in sources:
                if len(sources) == num_per_task:
                    if source > max(sources):
                        continue
                    del sources[max(sources)]
                sources[source] = []
            rows = sources[source]
            # A full source keeps its smallest ids: skip a larger one before copying its image bytes.
            if len(rows) == num_per_task and pair_id >= rows[-1][0]:
                continue
            bisect.insort(rows, (pair_id, str(prompt), bytes(clean), bytes(degraded)))
            del rows[num_per_task:]
    picked: dict[str, list[Any]] = defaultdict(list)
    for group, sources in sorted(held.items()):
        queues = [sources[source] for source in sorted(sources)]
        turns = (queue[i] for i in range(num_per_task) for queue in queues if i < len(queue))
        for _, (_, prompt, clean, degraded) in zip(range(num_per_task), turns):
            for key, value in (("group", group), ("prompt", prompt), ("clean", clean), ("degraded", degraded)):
                picked[key].append(value)
    return dict(picked)


def decode_val_set(val: dict[str, list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Clean and degraded images of a val set as float32 N×H×W×3 in [0, 1]."""
    both = decode_stack([*val["clean"], *val["degraded"]], "validation pairs").astype(np.float32) / 255.0
    return both[: len(val["clean"])], both[len(val["clean"]) :]


def image_scores(reference: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSNR (dB, capped at 100 for identical images) and SSIM of each image in N×H×W×3 float [0, 1] against its reference."""
    mse = np.mean((reference.astype(np.float64) - images.astype(np.float64)) ** 2, axis=(1, 2, 3))
    psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))
    ssim = np.array([structural_similarity(r, i, channel_axis=2, data_range=1.0) for r, i in zip(reference, images)])
    return psnr, ssim


def per_group(groups: list[str], psnr: np.ndarray, ssim: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean PSNR/SSIM per group as metric names `<prefix>/<group>/psnr`, plus the overall means."""
    names = np.asarray(groups)
    out = {f"{prefix}/mean/psnr": float(psnr.mean()), f"{prefix}/mean/ssim": float(ssim.mean())}
    for group in sorted(set(groups)):
        mask = names == group
        out[f"{prefix}/{group}/psnr"] = float(psnr[mask].mean())
        out[f"{prefix}/{group}/ssim"] = float(ssim[mask].mean())
    return out


# A group beats the identity baseline when its val PSNR is higher by more than this. The bridge flow's DiT
# starts at the identity, so an untrained one "beat" it on 6 of 9 tasks by thousandths of a dB; a trained tiny
# model's moiré moved by 0.01-0.03 dB either way from seed to seed.
WIN_MARGIN_DB = 0.05


def val_groups(metrics: dict[str, float]) -> list[str]:
    """The groups that `per_group` metrics score, sorted, the overall mean last."""
    return sorted({k.split("/")[1] for k in metrics if k.startswith("val/")}, key=lambda g: (g == "mean", g))


def wins(metrics: dict[str, float]) -> list[str]:
    """The groups (not the mean) whose val PSNR beats the identity baseline's by more than `WIN_MARGIN_DB`."""
    return [g for g in val_groups(metrics) if g != "mean"
            and metrics[f"val/{g}/psnr"] > metrics.get(f"identity/{g}/psnr", float("inf")) + WIN_MARGIN_DB]


def score_table(metrics: dict[str, float]) -> str:
    """Val PSNR and SSIM per group against the identity baseline, then which groups beat it (a text table)."""
    from realrestorer.degrade import TASKS

    lines = [f"{'group':<22}{'identity PSNR':>14}{'PSNR':>8}{'Δ dB':>8}{'SSIM':>8}"]
    groups = val_groups(metrics)
    for group in groups:
        base, psnr = metrics.get(f"identity/{group}/psnr", float("nan")), metrics[f"val/{group}/psnr"]
        lines.append(f"{group:<22}{base:>14.2f}{psnr:>8.2f}{psnr - base:>+8.2f}{metrics[f'val/{group}/ssim']:>8.3f}")
    won = wins(metrics)
    parts = []
    for label, members in (("tasks", [g for g in groups if g in TASKS]),
                           ("other groups", [g for g in groups if g not in TASKS and g != "mean"])):
        if members:
            names = [g for g in members if g in won]
            parts.append(f"{len(names)} of {len(members)} {label} ({', '.join(names) or 'none'})")
    lines.append(f"beats the identity baseline by more than {WIN_MARGIN_DB} dB on " + " and ".join(parts))
    return "\n".join(lines)


def rank_batches(num_pairs: int, batch_size: int, rank: int, world: int) -> tuple[list[int], int]:
    """The starts of the val batches `rank` restores, and the number of batches the busiest rank runs.

    The set is cut into batches as one worker cuts it, so each batch keeps its seed and the scores do not
    depend on the worker count; the batches go to the ranks in contiguous shares, rank 0's the fullest.
    """
    starts = list(range(0, num_pairs, batch_size))
    per_rank = -(-len(starts) // world)
    return starts[rank * per_rank:(rank + 1) * per_rank], per_rank


def restore_val_set(restorer, val: dict[str, list[Any]], degraded: np.ndarray, num_steps: int | None,
                    batch_size: int, seed: int, rank: int = 0, world: int = 1,
                    lockstep: bool = False, ema=None) -> tuple[np.ndarray, np.ndarray]:
    """This rank's share of a decoded val set restored: its pairs' indices and N×H×W×3 float32 in [0, 1].

    The restorer runs in eval mode (its mode is put back after), with the `ema` average swapped into its DiT
    where one is given.

    With `lockstep` (ZeRO-3, whose every forward gathers weights collectively) a rank with fewer batches
    than the busiest one restores its first batch again (the set's first batch if it has none), unscored, until
    it has run as many forwards.
    """
    starts, per_rank = rank_batches(len(degraded), batch_size, rank, world)
    indices, outputs = [], []
    runs = [(start, True) for start in starts]
    if lockstep:
        runs += [(starts[0] if starts else 0, False)] * (per_rank - len(starts))
    training = restorer.training
    restorer.eval()
    with ema.swapped_in(restorer.dit) if ema is not None else contextlib.nullcontext():
        for start, scored in runs:
            batch = torch.from_numpy(degraded[start:start + batch_size]).permute(0, 3, 1, 2).to(restorer.device)
            prompts = val["prompt"][start:start + batch_size]
            restored = restorer.restore(batch, prompts, num_steps=num_steps, seed=seed + start)
            if scored:
                indices.extend(range(start, start + len(batch)))
                outputs.append(restored.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
    restorer.train(training)
    empty = np.zeros((0, *degraded.shape[1:]), np.float32)
    return np.asarray(indices, dtype=np.int64), np.concatenate(outputs) if outputs else empty


def group_firsts(groups: list[str]) -> list[int]:
    """The index of each group's first pair, groups in sorted order: the rows of the sample grid."""
    return [groups.index(g) for g in sorted(set(groups))]


def sample_grid(groups: list[str], degraded: np.ndarray, restored, clean: np.ndarray) -> np.ndarray:
    """One row per group (its first pair): degraded | restored | clean, as an H×W×3 uint8 image.

    `restored` is indexed like the val set: an array, or a mapping that holds at least the groups' first pairs.
    """
    rows = [np.concatenate([degraded[i], restored[i], clean[i]], axis=1) for i in group_firsts(groups)]
    return to_uint8(np.concatenate(rows, axis=0))


def rank_share(groups: list[str], indices: np.ndarray, restored: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """What a rank sends of its restored share: its indices and, as uint8, those of the grid's rows it holds
    (a val image at 1024² is 12 MB in float32)."""
    firsts = set(group_firsts(groups))
    return indices, {int(i): to_uint8(image) for i, image in zip(indices, restored) if i in firsts}


def merge_shares(shares: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]],
                 num_pairs: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Every rank's (indices, PSNR, SSIM, grid rows) put together: PSNR and SSIM in val-set order, and the grid
    rows as float images. Shares that do not cover the set exactly once are an error."""
    order = np.concatenate([share[0] for share in shares])
    if sorted(order.tolist()) != list(range(num_pairs)):
        raise RuntimeError(f"validation shares cover {len(order)} of {num_pairs} pairs")
    psnr, ssim = np.empty(num_pairs), np.empty(num_pairs)
    psnr[order] = np.concatenate([share[1] for share in shares])
    ssim[order] = np.concatenate([share[2] for share in shares])
    rows = {i: row.astype(np.float32) / 255.0 for share in shares for i, row in share[3].items()}
    return psnr, ssim, rows
