"""Reflection layers: the images `degrade.reflection_layers` names, used as the reflection task's reflected scene.

The builder loads them all once per actor, fitted to the crop size, in URI
order; a sample then picks one with its own generator. Which layer a sample gets
therefore depends only on its seed and on the set of usable files, which is the
same on every actor. Files that cannot be used are skipped and counted by
reason, as clean sources are. Memory: one resolution² RGB image per layer per
actor (768 KiB at 512²), so a few hundred layers are cheap.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from realrestorer import storage
from realrestorer.data.config import DataConfig
from realrestorer.data.sources import list_files, load_image, resize_short_side


def fit_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """The centred side×side square of the image downscaled so its short side is `side`."""
    if min(rgb.shape[:2]) < side:
        raise ValueError(f"a {rgb.shape[1]}×{rgb.shape[0]} image cannot give a {side}² layer")
    resized = resize_short_side(rgb, side)
    y, x = (resized.shape[0] - side) // 2, (resized.shape[1] - side) // 2
    return np.ascontiguousarray(resized[y:y + side, x:x + side])


class ReflectionLayers:
    """The usable images of a reflection-layer source, fitted to `data.resolution`; `skipped` counts the others by reason."""

    def __init__(self, source: str, data: DataConfig, storage_cfg: storage.StorageConfig | None = None):
        self.source = source
        self.uris: list[str] = []
        self.images: list[np.ndarray] = []
        self.skipped: Counter = Counter()
        for uri in list_files(source, storage_cfg):
            image, reason = load_image(uri, data, storage_cfg)
            if reason:
                self.skipped[reason] += 1
                continue
            self.uris.append(uri)
            self.images.append(fit_square(image, data.resolution))
        if not self.images:
            raise ValueError(f"degrade.reflection_layers={source!r} holds no usable image (skipped: {dict(self.skipped)})")

    def pick(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(URI, image) of one layer, drawn from `rng`."""
        index = int(rng.integers(len(self.images)))
        return self.uris[index], self.images[index]

    def summary(self) -> dict[str, Any]:
        """What the manifest records about the layers."""
        return {"source": self.source, "num_layers": len(self.images), "skipped": dict(sorted(self.skipped.items()))}


def record_layer(params: dict[str, Any], uri: str) -> None:
    """Write `uri` into every reflection step of `params` that used the external layer (as `layer_uri`).

    `params` is a reflection sample's, a mixed chain's or a proxy's chain of [mixed, web].
    """
    if params.get("task") == "reflection" and params.get("layer") == "external":
        params["layer_uri"] = uri
    for step in [*params.get("steps", []), *params.get("chain", [])]:
        if isinstance(step, dict):
            record_layer(step, uri)


__all__ = ["ReflectionLayers", "fit_square", "record_layer"]
