"""What a person looks at after a build: the summary table and a contact sheet of pairs."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from realrestorer import storage
from realrestorer.data import shards

_TILE = 128


def format_summary(summary: dict[str, Any]) -> str:
    """Counts per task, split and kind; rejections by reason; throughput: as a plain-text table."""
    splits = sorted(summary["counts"])
    columns = [(split, kind) for split in splits for kind in sorted(summary["counts"][split])]
    tasks = sorted({task for split in splits for kind in summary["counts"][split] for task in summary["counts"][split][kind]})
    header = ["task"] + [f"{split}/{kind}" for split, kind in columns]
    table = [header] + [[task] + [str(summary["counts"][s][k].get(task, 0)) for s, k in columns] for task in tasks]
    table.append(["total"] + [str(sum(summary["counts"][s][k].values())) for s, k in columns])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("rejected: " + (", ".join(f"{r}={n}" for r, n in summary["rejections"].items()) or "none"))
    unavailable = summary["quality_metrics"]["unavailable"]
    lines.append("quality metrics: " + ", ".join(summary["quality_metrics"]["used"] or ["none"])
                 + (f" (unavailable: {', '.join(unavailable)})" if unavailable else ""))
    layers = summary["reflection_layers"]
    if layers is not None:
        skipped = ", ".join(f"{r}={n}" for r, n in layers["skipped"].items())
        lines.append(f"reflection layers: {layers['num_layers']} from {layers['source']}"
                     + (f" (skipped: {skipped})" if skipped else ""))
    rate = summary["pairs_per_s"]
    lines.append(f"pairs: {summary['num_pairs']} in {summary['seconds']:.1f} s"
                 + (f" ({rate:.2f} pairs/s)" if rate is not None else " (all shards were already complete)"))
    removed = summary["shards"]["removed"]
    lines.append(f"shards: {summary['shards']['built']} built, {summary['shards']['skipped']} already complete"
                 + (f", {removed} left by another plan removed" if removed else ""))
    lines.append(format_vlm_check(summary["vlm_check"]))
    lines.append(f"output: {summary['output']}")
    return "\n".join(lines)


def format_vlm_check(check: str | dict[str, Any]) -> str:
    """One line on the VLM check: why it was skipped, or how often the judge agreed with the labels."""
    if isinstance(check, str):
        return f"vlm check: {check}"

    def share(rate: float | None) -> str:
        return "n/a" if rate is None else f"{rate:.1%}"

    return (f"vlm check: {check['num_checked']} pairs checked, task agreement {share(check['agreement'])}, "
            f"severity agreement {share(check['severity_agreement'])}, {check['num_rejected']} rejected")


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (_TILE, 14), (0, 0, 0), -1)
    cv2.putText(out, text, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(output: str, storage_cfg: storage.StorageConfig | None = None) -> np.ndarray | None:
    """One row per task (first pair found in the train shards): clean beside degraded; None without pairs."""
    picked: dict[str, dict[str, Any]] = {}
    for uri in shards.shard_uris(output, split="train", storage_cfg=storage_cfg):
        for row in shards.read_table(uri, storage_cfg).select(["task", "kind", "clean", "degraded"]).to_pylist():
            picked.setdefault(f"{row['task']} ({row['kind']})", row)
    if not picked:
        return None
    rows = []
    for name, row in sorted(picked.items()):
        tiles = [cv2.resize(shards.decode_image(row[key]), (_TILE, _TILE), interpolation=cv2.INTER_AREA)
                 for key in ("clean", "degraded")]
        rows.append(np.hstack([_label(tiles[0], f"{name} clean"), _label(tiles[1], "degraded")]))
    return np.vstack(rows)


__all__ = ["contact_sheet", "format_summary", "format_vlm_check"]
