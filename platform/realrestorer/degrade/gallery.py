"""A contact sheet of the engine: every task at three severities, labelled."""

from __future__ import annotations

import cv2
import numpy as np

from realrestorer.degrade import ALL_TASKS, degrade
from realrestorer.degrade.color import to_rgb_float

GALLERY_SEVERITIES = (0.2, 0.5, 0.9)


def builtin_photo() -> np.ndarray:
    """A clean colour photo that ships with scikit-image (no download)."""
    from skimage import data as skdata

    return skdata.astronaut()


def _label(cell: np.ndarray, text: str) -> np.ndarray:
    cell = cell.copy()
    scale = max(0.35, cell.shape[1] / 520)
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(cell, (0, 0), (w + 8, h + base + 8), (0, 0, 0), -1)
    cv2.putText(cell, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return cell


def gallery(image: np.ndarray, seed: int = 0, cell: int = 256, tasks: tuple[str, ...] = ALL_TASKS) -> np.ndarray:
    """Rows of [clean, severity 0.2, 0.5, 0.9] per task, as one uint8 RGB picture."""
    rgb = (to_rgb_float(image) * 255.0 + 0.5).astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = cell / max(h, w)
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    clean = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    rows = []
    for index, task in enumerate(tasks):
        cells = [_label(clean, f"{task}: clean")]
        for severity in GALLERY_SEVERITIES:
            out, _ = degrade(task, clean, np.random.default_rng([seed, index]), severity)
            cells.append(_label(out, f"{task} {severity:.1f}"))
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)
