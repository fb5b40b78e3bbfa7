"""A small real pair dataset and configs of a micro restorer for the training tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realrestorer.config import load_config
from realrestorer.data.config import DataConfig
from realrestorer.data.sources import load_image
from realrestorer.data.shards import write_pairs
from realrestorer.degrade import TASKS, degrade

SIDE = 32

# A ~0.1 M-parameter DiT at 32²: a training run takes seconds, not minutes.
MICRO_MODEL = [
    "model.dit.num_layers=1", "model.dit.num_single_layers=1", "model.dit.attention_head_dim=16",
    "model.dit.num_attention_heads=2", "model.dit.axes_dims_rope=[4, 6, 6]", "model.resolution=32", "model.num_steps=4",
]


def make_pairs(split: str, crops_per_task: int, seed: int, tasks: tuple[str, ...] = TASKS,
               photos: tuple[str, ...] = ("astronaut", "coffee", "chelsea")) -> list[dict]:
    """Real degraded pairs: 32² crops of built-in scikit-image photos (by name, at 96²), one degradation per row."""
    rng = np.random.default_rng(seed)
    whole = DataConfig(min_side=1)
    photos = [cv2.resize(load_image(f"skimage://{name}", whole)[0], (96, 96), interpolation=cv2.INTER_AREA) for name in photos]
    rows = []
    for task in tasks:
        for _ in range(crops_per_task):
            photo = photos[int(rng.integers(len(photos)))]
            y, x = rng.integers(0, 96 - SIDE, size=2)
            clean = np.ascontiguousarray(photo[y:y + SIDE, x:x + SIDE])
            degraded, params = degrade(task, clean, rng, float(rng.uniform(0.3, 0.8)))
            rows.append({"split": split, "kind": "synthetic", "task": task, "clean": clean, "degraded": degraded, "params": params})
    return rows


@pytest.fixture(scope="session")
def pair_dataset(tmp_path_factory) -> str:
    """A dataset folder with 36 train and 9 val pairs over the nine tasks."""
    root = str(tmp_path_factory.mktemp("pairs"))
    write_pairs(make_pairs("train", 4, seed=1) + make_pairs("val", 1, seed=2), root)
    return root


@pytest.fixture(scope="session")
def uniform_dataset(tmp_path_factory) -> str:
    """36 copies of one train pair (plus 9 val pairs): every way of splitting it across workers gives the same batches."""
    root = str(tmp_path_factory.mktemp("uniform"))
    (one,) = make_pairs("train", 1, seed=3)[:1]
    write_pairs([dict(one) for _ in range(36)] + make_pairs("val", 1, seed=2), root)
    return root


def micro_config(root: str, dataset: str, *overrides: str):
    """The tiny preset shrunk to the micro restorer, writing under `root` and reading `dataset`."""
    return load_config("tiny", [*MICRO_MODEL, f"storage.root={root}", f"data.output={dataset}", *overrides])
