"""Restoring image files with a trained model: what `realrestorer restore MODEL INPUT… -o OUT` runs.

The model is a consolidated directory (`dit/` + `model_card.json`, local or s3://) as a training stage writes
it. Inputs are image files or folders of them (searched recursively, following links; hidden files and anything
under OUT left out). Each restored image goes to OUT as a PNG: a file's as `<stem>.png`, a folder's at its path
relative to that folder. A file that cannot be read is skipped and counted by reason. An output already there is
kept, unless `overwrite`, so an interrupted run, run again, does the rest; OUT's `restore.json` records the
model and settings, and a run with others is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realrestorer.imagefile import IMAGE_SUFFIXES

RUN_FILE = "restore.json"


@dataclass
class RestoreSummary:
    """What a `restore_files` call did: counts, skip reasons and timing."""

    out_dir: Path
    num_planned: int
    num_restored: int = 0
    num_existing: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    seconds: float = 0.0
    device: str = "cpu"

    def lines(self) -> list[str]:
        per = f" ({self.seconds / self.num_restored:.2f} s an image)" if self.num_restored else ""
        load = f", after {self.load_seconds:.1f} s loading the model" if self.load_seconds else ""
        head = f"restored {self.num_restored} of {self.num_planned} images into {self.out_dir}"
        out = [f"{head} in {self.seconds:.1f} s{per} on {self.device}{load}"]
        if self.num_existing:
            out.append(f"kept {self.num_existing} already restored (--overwrite redoes them)")
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            out.append(f"skipped {sum(self.skipped.values())}: {reasons}")
        return out


def _images_under(folder: Path, out_dir: Path) -> list[Path]:
    """The image files under `folder`, sorted, following links to folders once each, leaving out hidden names and
    anything under `out_dir` (so outputs written inside an input folder are not restored again)."""
    # Only an OUT inside the folder holds outputs the scan could meet; a folder inside OUT is scanned whole.
    out_real = os.path.realpath(out_dir)
    inside = out_real.startswith(os.path.realpath(folder) + os.sep)
    seen: set[str] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or (inside and (real == out_real or real.startswith(out_real + os.sep))):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def plan_outputs(inputs: list[str], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input image, output PNG) for every input file and every image under every input folder, in order.

    ValueError for a missing input, a folder without images, an output that would replace its own input, or two
    inputs that would write the same output. A file named twice (directly and through its folder) counts once.
    """
    plan: dict[str, tuple[Path, Path]] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            if os.path.realpath(path) == os.path.realpath(out_dir):
                raise ValueError(f"{item}: is also the output folder, whose files would be replaced; give -o another folder")
            found = _images_under(path, out_dir)
            if not found:
                raise ValueError(f"{item}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            pairs = [(p, out_dir / p.relative_to(path).with_suffix(".png")) for p in found]
        elif path.is_file():
            pairs = [(path, out_dir / f"{path.stem}.png")]
        else:
            raise ValueError(f"{item}: no such file or folder")
        for src, dst in pairs:
            plan.setdefault(os.path.realpath(src), (src, dst))
    writers: dict[str, Path] = {}
    for real, (src, dst) in plan.items():
        target = os.path.realpath(dst)
        if target == real:
            raise ValueError(f"{src} would be overwritten by its own restoration; give -o another folder")
        if target in writers:
            raise ValueError(f"{writers[target]} and {src} would both be written to {dst}; restore them in separate runs")
        writers[target] = src
    return list(plan.values())


def prepare_out_dir(out_dir: Path, run: dict, overwrite: bool) -> None:
    """Create OUT (ValueError if it cannot be written) and record `run` in its RUN_FILE.

    Outputs kept from an earlier run must come from the same model and settings: a different run is refused
    unless `overwrite`, which redoes the outputs of this run's inputs (and records this run).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: is a file; -o names the folder the restored images go to")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"-o {out_dir}: cannot create the folder ({err.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"-o {out_dir}: the folder is not writable")
    record = out_dir / RUN_FILE
    if record.is_file() and not overwrite:
        try:
            before = json.loads(record.read_text())
        except ValueError:
            before = {}
        # A setting an older record lacks had its default then (keep_detail: off).
        changed = {key: before.get(key) for key, value in run.items() if before.get(key, False) != value}
        if changed:
            was = ", ".join(f"{key} {value!r}" for key, value in changed.items())
            raise ValueError(f"-o {out_dir}: holds the outputs of a run with other settings ({was}); "
                             "give another folder, or --overwrite to redo them all")
    record.write_text(json.dumps(run, indent=2, sort_keys=True))


def _to_tensor(image: np.ndarray):
    """uint8 gray/RGB/RGBA → (3×H×W float tensor in [0, 1], alpha plane or None)."""
    import torch

    alpha = None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image, alpha = image[..., :3], image[..., 3]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0, alpha


def _write(path: Path, image: np.ndarray) -> None:
    """Write via a temporary name, so an interrupted run never leaves a partial file that counts as done."""
    from realrestorer.imagefile import write_image

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{path.parent}: cannot create the folder ({err.strerror})") from None
    partial = path.with_name(f".{path.stem}.partial.png")
    write_image(partial, image)
    os.replace(partial, path)


def pick_device(device: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; a device that is not there is a ValueError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device; use cpu, cuda, cuda:N or auto") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible (use --device cpu)")
        if (chosen.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif chosen.type != "cpu":
        raise ValueError(f"--device {device}: use cpu, cuda, cuda:N or auto")
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
    keep_detail: bool = True,
    progress: bool = True,
) -> RestoreSummary:
    """Restore every input image with the model at `model_uri` and the prompt `prompt`; see the module doc.

    Image k of the plan samples with seed `seed + k`, so an output does not depend on the batch size or on
        which images an earlier run already did. `num_steps` and `guidance` default to the model card's; `keep_detail`
    is `Restorer.restore`'s, on by default here: inputs from disk are seldom at the model's working size, and
    measured on the tiny model the detail it keeps outweighs the fine-scale degradation it keeps too (see README).
    """
    import torch
    from tqdm import tqdm

    from realrestorer.imagefile import ImageReadError, read_image, to_uint8
    from realrestorer.model import load_restorer
    from realrestorer.model.restorer import CARD_NAME
    from realrestorer.model.weights import check_files
    from realrestorer.storage import join, read_bytes

    if batch_size < 1:
        raise ValueError(f"--batch must be at least 1, got {batch_size}")
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"--steps must be at least 1, got {num_steps}")
    if guidance is not None and guidance < 0:
        raise ValueError(f"--guidance must be at least 0, got {guidance}")
    check_files(model_uri, "model", ((CARD_NAME,), ("dit/config.json",)))
    out_dir = Path(out_dir).expanduser()
    plan = plan_outputs(inputs, out_dir)
    summary = RestoreSummary(out_dir=out_dir, num_planned=len(plan), device=pick_device(device))
    model = model_uri if "://" in model_uri else os.path.realpath(Path(model_uri).expanduser())
    try:  # the card's sampler defaults, recorded as used
        card = json.loads(read_bytes(join(model_uri, CARD_NAME)))["model"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"model: {join(model_uri, CARD_NAME)} is not a model card") from None
    num_steps = card["num_steps"] if num_steps is None else num_steps
    guidance = card["guidance"] if guidance is None else guidance
    prepare_out_dir(out_dir, {"model": model, "prompt": prompt, "steps": num_steps, "guidance": guidance,
                              "seed": seed, "keep_detail": keep_detail}, overwrite)
    todo = [(k, src, dst) for k, (src, dst) in enumerate(plan) if overwrite or not dst.exists()]
    summary.num_existing = len(plan) - len(todo)
    if not todo:
        return summary
    restorer = None  # loaded when the first readable image needs it
    started = time.perf_counter()
    bar = tqdm(total=len(todo), unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(todo), batch_size):
        readable = []
        for k, src, dst in todo[start : start + batch_size]:
            try:
                tensor, alpha = _to_tensor(read_image(src))
            except ImageReadError as err:
                summary.skipped[err.reason] = summary.skipped.get(err.reason, 0) + 1
                tqdm.write(f"skipped {err}", file=sys.stderr)
                bar.update(1)
                continue
            readable.append((k, dst, tensor, alpha))
        # One restore call per run of consecutive plan indices: `restore` seeds image i of a call with seed + i.
        if readable and restorer is None:
            restorer = load_restorer(model_uri, key="model").to(summary.device).eval()
            summary.load_seconds = time.perf_counter() - started
        runs: list[list] = []
        for item in readable:
            if runs and runs[-1][-1][0] == item[0] - 1:
                runs[-1].append(item)
            else:
                runs.append([item])
        for run in runs:
            with torch.inference_mode():
                restored = restorer.restore([t for _, _, t, _ in run], [prompt] * len(run), num_steps=num_steps,
                                            guidance=guidance, seed=seed + run[0][0], keep_detail=keep_detail)
            for (_, dst, _, alpha), out in zip(run, restored):
                rgb = to_uint8(out.float().permute(1, 2, 0).cpu().numpy())
                _write(dst, rgb if alpha is None else np.dstack([rgb, alpha]))
                summary.num_restored += 1
                bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - started - summary.load_seconds
    return summary
