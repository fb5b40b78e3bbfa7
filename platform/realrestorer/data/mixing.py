"""Stage-2 mixing: a stream of batches drawing synthetic and real (or proxy) pairs at a scheduled ratio.

Progressive mixing: the synthetic share starts where stage 1 left off and decays
to the final ratio (what Ray Tune sweeps) as a function of the optimizer step and
the stage's planned step count only, so a resumed run is back on schedule from
its step alone. Inputs get web-style re-encoding on the fly with some
probability, as real inputs arrive after trips round the web.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from realrestorer.data.config import MixingConfig
from realrestorer.data.shards import decode_stack
from realrestorer.degrade import degrade


def ratio_at(step: int, cfg: MixingConfig, num_steps: int) -> float:
    """The synthetic share at optimizer step `step` (0-based) of a stage of `num_steps` planned steps.

    Progress runs from 0 at the first step to 1 at the last. An explicit
    `schedule` is interpolated linearly in it; otherwise the share follows a
    half cosine from `start_ratio` to `final_ratio` until progress reaches
    `decay_fraction`, and holds `final_ratio` after.
    """
    progress = min(1.0, max(0.0, step / max(1, num_steps - 1)))
    if cfg.schedule is not None:
        fractions = np.array([f for f, _ in cfg.schedule], dtype=np.float64)
        ratios = np.array([r for _, r in cfg.schedule], dtype=np.float64)
        return float(np.interp(progress, fractions, ratios))
    if progress >= cfg.decay_fraction:
        return cfg.final_ratio
    decay = 0.5 * (1.0 + math.cos(math.pi * progress / cfg.decay_fraction))
    return cfg.final_ratio + (cfg.start_ratio - cfg.final_ratio) * decay


class _Source:
    """Endless rows of a mixing source, pass after pass, from a resumable position (pass, rows read in it).

    `source` is a Ray Dataset or DataIterator (`iter_rows`), an object with `rows_of_pass(index)` (a worker's
    `RankRows`, whose pass order depends on the pass index), or any re-iterable of row dicts.
    """

    def __init__(self, source: Any, position: tuple[int, int] = (0, 0)):
        self.source = source
        self.passes, self.index = (int(v) for v in position)
        self._rows: Iterator[dict[str, Any]] | None = None

    def _open(self) -> Iterator[dict[str, Any]]:
        if hasattr(self.source, "rows_of_pass"):
            return iter(self.source.rows_of_pass(self.passes))
        return iter(self.source.iter_rows() if hasattr(self.source, "iter_rows") else self.source)

    def __next__(self) -> dict[str, Any]:
        if self._rows is None:
            self._rows = self._open()
            # A resumed pass: the rows already read flow through again (undecoded), which keeps the order.
            for _ in range(self.index):
                if next(self._rows, None) is None:  # the pass is shorter now (another worker count): the next one
                    self.passes, self.index, self._rows = self.passes + 1, 0, self._open()
                    break
        row = next(self._rows, None)
        if row is None:
            if self.index == 0:
                raise ValueError("a mixing source has no rows")
            self.passes, self.index, self._rows = self.passes + 1, 0, self._open()
            return next(self)
        self.index += 1
        return row

    @property
    def position(self) -> list[int]:
        return [self.passes, self.index]


class MixingReader:
    """Batches of decoded pairs: each sample is synthetic with probability `ratio_at(step, cfg, num_steps)`.

    `synthetic` and `real` are Ray Datasets, DataIterators (e.g. a Train worker's
    shard), `RankRows`, or re-iterable collections of shard rows; `num_steps` is the
    stage's planned step count, which places `step` on the schedule. Each yielded
    batch is a dict: `clean`, `degraded` (B×H×W×3 uint8), `prompt`, `task`, `kind`
    (lists), `step`, `synthetic_ratio` (the scheduled share at that step).

    Resumable: the draws of batch number `draws` (which samples are synthetic, which get web re-encoding) come
    from a generator seeded by (`seed`, `draws`), and `positions()` says how far each source has been read;
    a reader made with `draws` (the batches drawn so far) and the saved `positions` goes on with the same batches.
    """

    def __init__(self, synthetic: Iterable | Any, real: Iterable | Any, cfg: MixingConfig, batch_size: int,
                 num_steps: int, seed: int = 0, start_step: int = 0, draws: int = 0,
                 positions: dict[str, list[int]] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        self.cfg, self.batch_size, self.num_steps, self.step = cfg, batch_size, num_steps, start_step
        self.seed, self.draws = seed, draws
        positions = positions or {}
        self.sources = {True: _Source(synthetic, positions.get("synthetic", (0, 0))),
                        False: _Source(real, positions.get("real", (0, 0)))}

    def positions(self) -> dict[str, list[int]]:
        """How far each source has been read: {"synthetic": [pass, rows], "real": [pass, rows]}."""
        return {"synthetic": self.sources[True].position, "real": self.sources[False].position}

    def _augment(self, degraded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.cfg.web_augment_prob:
            return degraded
        out, _ = degrade("web", degraded, rng)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        ratio = ratio_at(self.step, self.cfg, self.num_steps)
        rng = np.random.default_rng([self.seed, self.draws])
        picks = rng.random(self.batch_size) < ratio
        rows = [next(self.sources[bool(p)]) for p in picks]
        batch = {
            "clean": decode_stack([r["clean"] for r in rows], "mixed training pairs"),
            "degraded": np.stack([self._augment(img, rng) for img in decode_stack([r["degraded"] for r in rows], "mixed training pairs")]),
            "prompt": [r["prompt"] for r in rows],
            "task": [r["task"] for r in rows],
            "kind": [r["kind"] for r in rows],
            "step": self.step,
            "synthetic_ratio": ratio,
        }
        self.step += 1
        self.draws += 1
        return batch


__all__ = ["MixingReader", "ratio_at"]
