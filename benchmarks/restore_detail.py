"""Restoring photos larger than a model's working size: the plain resize against `keep_detail`.

A consolidated model restores its own held-out built-in photos (the val and test sources of the card's seed and
splits), scaled to `--side` px on the short side and degraded per task at `--severity` (seeded), twice: resized
up from the working size, and with the input's finer detail added back (`Restorer.restore(keep_detail=True)`, the
`realrestorer restore` default). Prints mean PSNR against the clean photo per task, then one JSON line.

    python benchmarks/restore_detail.py --model runs/tiny/models/tiny-stage1
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from realrestorer.data.config import DataConfig
from realrestorer.data.filters import psnr
from realrestorer.data.sources import BUILTIN_PHOTOS, assign_splits, load_image
from realrestorer.degrade import TASKS, degrade
from realrestorer.imagefile import to_uint8
from realrestorer.model import load_restorer
from realrestorer.model.restorer import CARD_NAME
from realrestorer.storage import join, read_bytes


def held_out_photos(card: dict) -> list[str]:
    """The built-in photos the card's training data held out (its val and test sources)."""
    config = card["config"]
    if config["data"].get("clean_source"):
        raise SystemExit("the model was trained on other photos than the built-in ones; its held-out set is not known here")
    splits = assign_splits(list(BUILTIN_PHOTOS), config["seed"], config["data"]["splits"])
    return [uri for uri in BUILTIN_PHOTOS if splits[uri] != "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="consolidated model folder or s3:// URI")
    parser.add_argument("--tasks", nargs="+", default=["haze", "lowlight", "noise", "rain"], choices=list(TASKS))
    parser.add_argument("--severity", type=float, default=0.5, help="degradation strength in [0, 1] (default: 0.5)")
    parser.add_argument("--side", type=int, default=256, help="short side of the photos in px (default: 256)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model card's)")
    args = parser.parse_args()

    card = json.loads(read_bytes(join(args.model, CARD_NAME)))
    restorer = load_restorer(args.model).eval()
    photos = held_out_photos(card)
    print(f"{len(photos)} held-out photos at {args.side} px short side; working area {restorer.cfg.resolution}²")
    started = time.perf_counter()
    scores: dict[str, list[tuple[float, float, float]]] = {task: [] for task in args.tasks}
    for p, uri in enumerate(photos):
        photo, _ = load_image(uri, DataConfig())
        scale = args.side / min(photo.shape[:2])
        clean = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        for t, task in enumerate(args.tasks):
            degraded, _ = degrade(task, clean, np.random.default_rng(1000 * p + t), args.severity)
            image = torch.from_numpy(degraded).permute(2, 0, 1).float() / 255.0
            outs = []
            for keep in (False, True):
                with torch.inference_mode():
                    out = restorer.restore([image], [TASKS[task]], num_steps=args.steps, keep_detail=keep)[0]
                outs.append(to_uint8(out.permute(1, 2, 0).numpy()))
            scores[task].append((psnr(degraded, clean), psnr(outs[0], clean), psnr(outs[1], clean)))
    means = {task: np.mean(rows, axis=0).tolist() for task, rows in scores.items()}
    print(f"{'task':<12}{'input':>8}{'resized':>10}{'detail kept':>13}")
    for task, (inp, resized, kept) in means.items():
        print(f"{task:<12}{inp:8.2f}{resized:10.2f}{kept:13.2f}")
    print(json.dumps({"benchmark": "restore_detail", "model": args.model, "photos": photos, "side": args.side,
                      "severity": args.severity, "seconds": round(time.perf_counter() - started, 1),
                      "psnr": {task: dict(zip(("input", "resized", "keep_detail"), m)) for task, m in means.items()}}))


if __name__ == "__main__":
    main()
