"""Stage-2 mixing: a stream of batches drawing synthetic and real (or proxy) pairs at a ratio.

The ratio is what Ray Tune sweeps; a schedule changes it along training
(progressive mixing). Inputs get web-style re-encoding on the fly with some
probability, as real inputs arrive after trips round the web.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from realrestorer.data.config import MixingConfig
from realrestorer.data.shards import decode_image
from realrestorer.degrade import degrade


def ratio_at(step: int, cfg: MixingConfig) -> float:
    """The synthetic share at `step`: the schedule linearly interpolated (held past its ends), or the fixed ratio."""
    if cfg.schedule is None:
        return cfg.synthetic_ratio
    steps = np.array([s for s, _ in cfg.schedule], dtype=np.float64)
    ratios = np.array([r for _, r in cfg.schedule], dtype=np.float64)
    return float(np.interp(step, steps, ratios))


def _endless(source: Any) -> Iterator[dict[str, Any]]:
    # A Ray Dataset / DataIterator (iter_rows) or any re-iterable of row dicts, cycled epoch after epoch.
    while True:
        empty = True
        for row in (source.iter_rows() if hasattr(source, "iter_rows") else iter(source)):
            empty = False
            yield row
        if empty:
            raise ValueError("a mixing source has no rows")


class MixingReader:
    """Batches of decoded pairs: each sample is synthetic with probability `ratio_at(step)`.

    `synthetic` and `real` are Ray Datasets, DataIterators (e.g. a Train worker's
    shard) or re-iterable collections of shard rows. Each yielded batch is a dict:
    `clean`, `degraded` (B×H×W×3 uint8), `prompt`, `task`, `kind` (lists), `step`,
    `synthetic_ratio`.
    """

    def __init__(self, synthetic: Iterable | Any, real: Iterable | Any, cfg: MixingConfig, batch_size: int,
                 seed: int = 0, start_step: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.cfg, self.batch_size, self.step = cfg, batch_size, start_step
        self.rng = np.random.default_rng([seed, start_step])
        self.sources = {True: _endless(synthetic), False: _endless(real)}

    def _augment(self, degraded: np.ndarray) -> np.ndarray:
        if self.rng.random() >= self.cfg.web_augment_prob:
            return degraded
        out, _ = degrade("web", degraded, self.rng)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        ratio = ratio_at(self.step, self.cfg)
        picks = self.rng.random(self.batch_size) < ratio
        rows = [next(self.sources[bool(p)]) for p in picks]
        batch = {
            "clean": np.stack([decode_image(r["clean"]) for r in rows]),
            "degraded": np.stack([self._augment(decode_image(r["degraded"])) for r in rows]),
            "prompt": [r["prompt"] for r in rows],
            "task": [r["task"] for r in rows],
            "kind": [r["kind"] for r in rows],
            "step": self.step,
            "synthetic_ratio": ratio,
        }
        self.step += 1
        return batch


__all__ = ["MixingReader", "ratio_at"]
