"""Restoring image files with a trained model: what `realrestorer restore MODEL INPUT… -o OUT` runs.

The model is a consolidated directory (`dit/` + `model_card.json`, local or s3://) as a training stage writes
it. Inputs are image files or folders of them (searched recursively). Each restored image goes to OUT as a PNG:
a file's as `<stem>.png`, a folder's at its path relative to that folder. A file that cannot be read is skipped
and counted by reason; an output already there is kept (so an interrupted run, run again, does the rest),
unless `overwrite`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class RestoreSummary:
    """What a `restore_files` call did: counts, skip reasons and timing."""

    out_dir: Path
    num_planned: int
    num_restored: int = 0
    num_existing: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"

    def lines(self) -> list[str]:
        per = f" ({self.seconds / self.num_restored:.2f} s an image)" if self.num_restored else ""
        head = f"restored {self.num_restored} of {self.num_planned} images into {self.out_dir}"
        out = [f"{head} in {self.seconds:.1f} s{per} on {self.device}"]
        if self.num_existing:
            out.append(f"kept {self.num_existing} already restored (--overwrite redoes them)")
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            out.append(f"skipped {sum(self.skipped.values())}: {reasons}")
        return out


def plan_outputs(inputs: list[str], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input image, output PNG) for every input file and every image under every input folder, in order.

    ValueError for a missing input, a folder without images, or two inputs that would write the same output.
    """
    plan: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{item}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            plan += [(p, out_dir / p.relative_to(path).with_suffix(".png")) for p in found]
        elif path.is_file():
            plan.append((path, out_dir / f"{path.stem}.png"))
        else:
            raise ValueError(f"{item}: no such file or folder")
    writers: dict[Path, Path] = {}
    for src, dst in plan:
        if dst in writers and writers[dst] != src:
            raise ValueError(f"{writers[dst]} and {src} would both be written to {dst}; restore them in separate runs")
        writers[dst] = src
    # The same file named twice (a file and its folder) is restored once.
    return list(dict.fromkeys(plan))


def _skip_reason(message: str) -> str:
    """A short counter name for a read failure (imagefile's messages end in the reason)."""
    for reason in ("empty", "pixel limit", "corrupt or truncated", "not a readable image"):
        if reason in message:
            return {"pixel limit": "too large", "corrupt or truncated": "corrupt"}.get(reason, reason)
    return "unreadable"


def _to_tensor(image: np.ndarray):
    """uint8 gray/RGB/RGBA → (3×H×W float tensor in [0, 1], alpha plane or None)."""
    import torch

    alpha = None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image, alpha = image[..., :3], image[..., 3]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0, alpha


def _to_image(tensor, alpha: np.ndarray | None) -> np.ndarray:
    rgb = (tensor.detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return rgb if alpha is None else np.dstack([rgb, alpha])


def _write(path: Path, image: np.ndarray) -> None:
    """Write via a temporary name, so an interrupted run never leaves a partial file that counts as done."""
    from realrestorer.imagefile import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.png")
    write_image(partial, image)
    os.replace(partial, path)


def pick_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; an explicit 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible (use --device cpu)")
    return device


def restore_files(
    model_uri: str,
    inputs: list[str],
    out_dir: str | Path,
    prompt: str,
    *,
    num_steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 4,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> RestoreSummary:
    """Restore every input image with the model at `model_uri` and the prompt `prompt`; see the module doc.

    Image k of the plan samples with seed `seed + k`, so an output does not depend on the batch size or on
    which images an earlier run already did. `num_steps` and `guidance` default to the model card's.
    """
    import torch
    from tqdm import tqdm

    from realrestorer.imagefile import read_image
    from realrestorer.model import load_restorer
    from realrestorer.model.restorer import CARD_NAME
    from realrestorer.model.weights import check_files

    if batch_size < 1:
        raise ValueError(f"--batch must be at least 1, got {batch_size}")
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"--steps must be at least 1, got {num_steps}")
    check_files(model_uri, "model", ((CARD_NAME,), ("dit/config.json",)))
    out_dir = Path(out_dir).expanduser()
    plan = plan_outputs(inputs, out_dir)
    summary = RestoreSummary(out_dir=out_dir, num_planned=len(plan), device=pick_device(device))
    todo = [(k, src, dst) for k, (src, dst) in enumerate(plan) if overwrite or not dst.exists()]
    summary.num_existing = len(plan) - len(todo)
    if not todo:
        return summary
    started = time.perf_counter()
    restorer = None  # loaded when the first readable image needs it
    bar = tqdm(total=len(todo), unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(todo), batch_size):
        readable = []
        for k, src, dst in todo[start : start + batch_size]:
            try:
                tensor, alpha = _to_tensor(read_image(src))
            except ValueError as err:
                reason = _skip_reason(str(err))
                summary.skipped[reason] = summary.skipped.get(reason, 0) + 1
                tqdm.write(f"skipped {err}", file=sys.stderr)
                bar.update(1)
                continue
            readable.append((k, dst, tensor, alpha))
        # One restore call per run of consecutive plan indices: `restore` seeds image i of a call with seed + i.
        if readable and restorer is None:
            restorer = load_restorer(model_uri, key="model").to(summary.device).eval()
        runs: list[list] = []
        for item in readable:
            if runs and runs[-1][-1][0] == item[0] - 1:
                runs[-1].append(item)
            else:
                runs.append([item])
        for run in runs:
            with torch.inference_mode():
                restored = restorer.restore([t for _, _, t, _ in run], [prompt] * len(run), num_steps=num_steps,
                                            guidance=guidance, seed=seed + run[0][0])
            for (_, dst, _, alpha), out in zip(run, restored):
                _write(dst, _to_image(out, alpha))
                summary.num_restored += 1
                bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
