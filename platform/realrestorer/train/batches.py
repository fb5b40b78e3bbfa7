"""Training batches from Ray Data: decode pairs in the data pipeline, stream micro-batches with a resumable position.

A worker's stream is a sequence of epochs over its shard; within an epoch the
order comes from a local shuffle seeded by (seed, epoch). The position is
(epoch, micro-batches consumed in it), which is all a checkpoint of a non-mixing
stage needs to put a resumed run back at the same place in the data. A mixed
(stage-2) stream resumes from the step and each worker's (pass, rows read) place
in both sources (`resume_sources`).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from realrestorer.data.shards import decode_stack

COLUMNS = ("clean", "degraded", "prompt", "task")


def decode_pairs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data `map_batches` step: PNG/JPEG bytes → N×H×W×3 uint8 arrays (uint8 keeps the object store small)."""
    both = decode_stack([*batch["clean"], *batch["degraded"]], "training pairs")
    n = len(batch["clean"])
    return {"clean": both[:n], "degraded": both[n:], "prompt": batch["prompt"], "task": batch["task"]}


def _to_tensor(images_NHW3: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_NHW3)).permute(0, 3, 1, 2).float().div_(255.0)


class PairCollate(NumpyBatchCollateFn):
    """Decoded numpy columns → B×3×H×W float32 tensors in [0, 1] and lists of prompts and tasks."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return {
            "clean": _to_tensor(batch["clean"]),
            "degraded": _to_tensor(batch["degraded"]),
            "prompts": [str(p) for p in batch["prompt"]],
            "tasks": [str(t) for t in batch["task"]],
        }


def micro_batches(shard, micro_batch_size: int, shuffle_buffer: int, seed: int, epoch: int = 0,
                  position: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Endless (epoch, position after this batch, batch) from a worker's `DataIterator`, starting at a saved position.

    Every worker of a run gets an equal share of rows (Ray Train splits with
    equal=True), so all workers cross epoch boundaries at the same step.
    """
    while True:
        batches = shard.iter_torch_batches(
            batch_size=micro_batch_size,
            drop_last=True,
            local_shuffle_buffer_size=shuffle_buffer or None,
            local_shuffle_seed=(seed * 100_003 + epoch) if shuffle_buffer else None,
            collate_fn=PairCollate(),
        )
        count = 0
        for index, batch in enumerate(batches):
            count += 1
            # Skipped batches still flow through the pipeline: that is what keeps the order identical.
            if index >= position:
                yield epoch, index + 1, batch
        if count == 0:
            raise ValueError(f"this worker's share of the training data holds no full micro-batch of {micro_batch_size}")
        epoch, position = epoch + 1, 0


def resume_sources(state: dict[str, Any], rank: int, world: int) -> dict[str, list[int]] | None:
    """Where worker `rank` of `world` resumes reading its stage-2 sources, from a checkpoint's per-rank positions
    (`state["sources"][rank]`: {"synthetic": [pass, rows], "real": [pass, rows]} of that worker's share).

    None for a checkpoint without them. On another worker count (ZeRO-0 only, as `resume_position`) a rank takes
    a saved rank's position, its rows scaled to the new share size.
    """
    sources = state.get("sources")
    if not sources:
        return None
    saved = len(sources)
    if saved == world:
        return sources[rank]
    return {name: [passes, rows * saved // world] for name, (passes, rows) in sources[rank % saved].items()}


def resume_position(state: dict[str, Any], world: int) -> int | None:
    """A saved data position carried to another worker count, or None where the count is unchanged.

    `position` counts micro-batches of one worker's share of an epoch, and each share is a 1/world split, so
    on `world` workers instead of the saved count the epoch resumes after as many pairs in all (rounded down).
    Only ZeRO-0 runs get here: under ZeRO 1-3 DeepSpeed cannot re-partition the saved optimizer state, and the
    driver refuses such a resume first (`stages.check_resume_workers`).
    """
    saved = state.get("world", world)
    if saved == world:
        return None
    return state["position"] * saved // world


class RankRows:
    """A re-iterable over one worker's share (every `world`-th row from `rank`) of a `DataIterator`.

    Mixed streams draw from two sources at random rates, so workers would reach
    epoch ends at different steps; a streaming split waits for every worker at
    each epoch start and would deadlock against the gradient all-reduce. So the
    driver gives each worker its own shard files of a source where `stages.rank_files`
    can deal them out fairly by row count (every worker a share, the largest within
    1.25× of the smallest; here rank 0 of 1), and otherwise each worker reads the
    whole source and keeps its own rows.

    With `shuffle_buffer` rows the stream passes a local shuffle first, seeded by `seed` and the pass number
    and the same on every worker, so the workers' shares still split the rows between them. Shards keep each
    source image's crops together: without it a batch would hold one or two images, in the same order every pass.
    """

    def __init__(self, iterator, rank: int, world: int, shuffle_buffer: int = 0, seed: int = 0):
        self.iterator, self.rank, self.world = iterator, rank, world
        self.shuffle_buffer, self.seed, self.passes = shuffle_buffer, seed, 0

    def _rows(self, pass_index: int) -> Iterator[dict[str, Any]]:
        if not self.shuffle_buffer:
            yield from self.iterator.iter_rows()
            return
        for batch in self.iterator.iter_batches(
            batch_size=64, batch_format="numpy", local_shuffle_buffer_size=self.shuffle_buffer,
            local_shuffle_seed=self.seed * 100_003 + pass_index,
        ):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                yield dict(zip(columns, values))

    def rows_of_pass(self, pass_index: int) -> Iterator[dict[str, Any]]:
        """This worker's rows in pass `pass_index` (0-based): a resumed reader opens the pass it stopped in."""
        for index, row in enumerate(self._rows(pass_index)):
            if index % self.world == self.rank:
                yield row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.passes += 1
        return self.rows_of_pass(self.passes - 1)


def mixed_share(source: str, rank: int, world: int, datasets: list[str]) -> tuple[str, int, int]:
    """Which dataset worker `rank` reads a mixed source from, and its (rank, world) in that dataset's rows: its own
    files `<source>-<rank>` whole where the driver dealt them out, else every world-th row of the whole source."""
    own = f"{source}-{rank}"
    return (own, 0, 1) if own in datasets else (source, rank, world)


def mixed_micro_batches(reader, first_step: int, num_accum: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Endless (0, micro-batches drawn, batch) from a stage-2 `MixingReader`, its ratio following the optimizer step."""
    count = first_step * num_accum
    while True:
        # The reader's schedule is read at the optimizer step, not at the micro-batch count.
        reader.step = count // num_accum
        batch = next(reader)
        count += 1
        yield 0, count, PairCollate()({key: np.asarray(batch[key]) for key in ("clean", "degraded", "prompt", "task")})
