"""Image sources: listing clean and real images, and loading them with validation.

A file that cannot be used is never an error: `load_image` returns the reason
(`empty_file`, `file_too_large`, `not_an_image`, `decompression_bomb`,
`too_small`, `corrupt`), and the builder counts it in the manifest.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from realrestorer import storage
from realrestorer.data.config import SPLITS, DataConfig
from realrestorer.degrade import TASKS

# Photographs that ship with installed packages (offline): the built-in clean set. Nine colour photos of
# scikit-image, its six grayscale photographs (as RGB), two colour photos of scikit-learn and one of matplotlib
# (both come with mlflow). The content matters more than the crop count: trained on the five training photos
# of the nine colour ones, the tiny DiT's mild tasks (blur, compression, moire, noise) fell to -4 to -6 dB vs
# identity on held-out photos after 600 steps of 32 (it learns the training photos); with the grayscale
# photos and five more colour ones they stayed at or above identity (blur +0.24, moire +0.07, noise -0.01).
BUILTIN_PHOTOS = (
    "skimage://astronaut", "skimage://coffee", "skimage://chelsea", "skimage://rocket", "skimage://hubble_deep_field",
    "skimage://immunohistochemistry", "skimage://retina", "skimage://motorcycle_left", "skimage://motorcycle_right",
    "skimage://camera", "skimage://coins", "skimage://moon", "skimage://grass", "skimage://gravel", "skimage://brick",
    "sklearn://china", "sklearn://flower", "matplotlib://grace_hopper",
)  # the stereo motorcycle views are near-duplicates on purpose: the builder's dedup removes one
# Where scikit-learn and matplotlib keep their sample photos, inside the installed package.
_PACKAGE_PHOTO_DIRS = {"sklearn": ("sklearn", "datasets/images"), "matplotlib": ("matplotlib", "mpl-data/sample_data")}
BUILTIN_SCHEMES = tuple(sorted({uri.split("://")[0] + "://" for uri in BUILTIN_PHOTOS}))

SKIP_REASONS = ("empty_file", "file_too_large", "not_an_image", "decompression_bomb", "too_small", "corrupt", "unreadable")


def list_files(source: str, storage_cfg: storage.StorageConfig | None = None) -> list[str]:
    """Every file under a folder/prefix, or matching a glob, as sorted URIs (hidden files left out)."""
    fs, path = storage.filesystem(source, storage_cfg)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        found = [path]
    else:
        raise ValueError(f"image source {source!r} does not exist")
    files = [p for p in found if not p.rsplit("/", 1)[-1].startswith(".") and not fs.isdir(p)]
    return sorted(storage.with_protocol(fs, p) for p in files)


def list_clean(source: str | None, storage_cfg: storage.StorageConfig | None = None) -> list[str]:
    """URIs of the clean images; None means the built-in photos."""
    if source is None:
        return list(BUILTIN_PHOTOS)
    return list_files(source, storage_cfg)


def list_real(source: str, storage_cfg: storage.StorageConfig | None = None) -> list[dict[str, Any]]:
    """Real items {degraded, reference (or None), task} from a `<task>/degraded|reference/` folder or a .jsonl manifest."""
    if source.endswith(".jsonl"):
        items = [json.loads(line) for line in storage.read_bytes(source, storage_cfg).decode().splitlines() if line.strip()]
        for n, item in enumerate(items, 1):
            if "degraded" not in item or item.get("task") not in TASKS:
                raise ValueError(f"{source} line {n}: needs 'degraded' and a 'task' among {', '.join(TASKS)}")
        return [{"degraded": i["degraded"], "reference": i.get("reference"), "task": i["task"]} for i in items]
    items = []
    for uri in list_files(source, storage_cfg):
        parts = uri.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-2] == "degraded":
            task = parts[-3]
            if task not in TASKS:
                raise ValueError(f"real image {uri} is in folder {task!r}, which is not one of the nine tasks")
            reference = "/".join(parts[:-2] + ["reference", parts[-1]])
            items.append({"degraded": uri, "reference": reference, "task": task})
    references = set(list_files(source, storage_cfg))
    for item in items:
        if item["reference"] not in references:
            item["reference"] = None
    if not items:
        raise ValueError(f"no real images under {source}: expected <task>/degraded/<name> files")
    return items


def _builtin(uri: str) -> np.ndarray:
    """A built-in photo (one of BUILTIN_PHOTOS) as H×W×3 uint8 RGB."""
    if uri not in BUILTIN_PHOTOS:
        raise ValueError(f"unknown built-in photo {uri!r}; choose one of {', '.join(BUILTIN_PHOTOS)}")
    scheme, name = uri.split("://", 1)
    if scheme in _PACKAGE_PHOTO_DIRS:
        # Read the file straight from the package's data: importing sklearn.datasets alone takes about a
        # second, which every Ray worker that loads one of these photos would pay.
        package, folder = _PACKAGE_PHOTO_DIRS[scheme]
        spec = importlib.util.find_spec(package)
        path = Path(spec.submodule_search_locations[0], folder, f"{name}.jpg") if spec else None
        if path is None or not path.is_file():
            raise ValueError(f"built-in photo {uri!r}: {package} is not installed or lacks {folder}/{name}.jpg")
        with Image.open(path) as handle:
            photo = np.asarray(handle.convert("RGB"))
    else:
        from skimage import data as skdata

        if name.startswith("motorcycle_"):
            left, right, _ = skdata.stereo_motorcycle()
            photo = left if name == "motorcycle_left" else right
        else:
            photo = getattr(skdata, name)()
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    return np.ascontiguousarray(photo[..., :3]).astype(np.uint8)


def _decode_checked(data: bytes, cfg: DataConfig) -> tuple[np.ndarray | None, str | None]:
    try:
        with warnings.catch_warnings():
            # PIL warns (and raises above 2×) on big headers; our own limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError:
        return None, "decompression_bomb"
    except (UnidentifiedImageError, OSError, ValueError):
        return None, "not_an_image"
    width, height = image.size
    if width * height > cfg.max_pixels:
        return None, "decompression_bomb"
    if min(width, height) < cfg.smallest_side:
        return None, "too_small"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: PIL's RGB conversion would clip, so scale down first.
                rgb = (np.asarray(image, dtype=np.float32) / 257.0).round().astype(np.uint8)
                rgb = np.repeat(rgb[..., None], 3, axis=2)
            else:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):
        return None, "corrupt"
    return np.ascontiguousarray(rgb), None


def load_image(uri: str, cfg: DataConfig, storage_cfg: storage.StorageConfig | None = None) -> tuple[np.ndarray | None, str | None]:
    """(H×W×3 uint8 RGB, None), or (None, skip reason) for a file that cannot be used."""
    if uri.startswith(BUILTIN_SCHEMES):
        photo = _builtin(uri)
        return (None, "too_small") if min(photo.shape[:2]) < cfg.smallest_side else (photo, None)
    try:
        fs, path = storage.filesystem(uri, storage_cfg)
        size = fs.size(path)
        if not size:
            return None, "empty_file"
        if size > cfg.max_file_bytes:
            return None, "file_too_large"
        with fs.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, PermissionError):
        return None, "unreadable"
    return _decode_checked(data, cfg)


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """Downscale (aspect kept) so the short side is `short_side`; smaller images are returned as they are."""
    height, width = rgb.shape[:2]
    scale = short_side / min(height, width)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def random_crop(shape: tuple[int, ...], side: int, rng: np.random.Generator, scale_max: float = 1.0) -> list[int]:
    """[x, y, w, h] of a random square window inside an image of `shape`.

    The window is `side` pixels, or with `scale_max` > 1 side × s for s log-uniform in [1, scale_max]
    (capped by the image), to be resized down to `side`; with scale_max = 1 no scale is drawn.
    """
    height, width = shape[:2]
    if min(height, width) < side:
        raise ValueError(f"image {width}×{height} is smaller than the {side}² crop")
    window = side
    if scale_max > 1.0:
        window = min(min(height, width), int(round(side * float(np.exp(rng.uniform(0.0, np.log(scale_max)))))))
    x = int(rng.integers(0, width - window + 1))
    y = int(rng.integers(0, height - window + 1))
    return [x, y, window, window]


def cut_crop(image: np.ndarray, crop: list[int], side: int) -> np.ndarray:
    """The `crop` window [x, y, w, h] of `image`, resized (area-averaged) to side × side where it is larger."""
    x, y, w, h = crop
    window = image[y:y + h, x:x + w]
    if (w, h) == (side, side):
        return np.ascontiguousarray(window)
    return cv2.resize(window, (side, side), interpolation=cv2.INTER_AREA)


def _unit_hash(source_uri: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}|{source_uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _intervals(fractions: dict[str, float]) -> dict[str, tuple[float, float]]:
    edges, edge = {}, 0.0
    for name in SPLITS:
        edges[name] = (edge, edge + fractions.get(name, 0.0))
        edge = edges[name][1]
    return edges


def split_of(source_uri: str, seed: int, fractions: dict[str, float]) -> str:
    """The split of a source image: a hash of its URI placed on the cumulative split fractions."""
    u = _unit_hash(source_uri, seed)
    for name, (_, high) in _intervals(fractions).items():
        if u < high:
            return name
    return next(name for name in reversed(SPLITS) if fractions.get(name, 0.0) > 0)


def assign_splits(source_uris: list[str], seed: int, fractions: dict[str, float]) -> dict[str, str]:
    """`split_of` for every source, except that no split with a positive fraction is left empty.

    With few sources (the built-in set has eighteen) the hash can leave the val split
    with nothing. Then the source whose hash lies nearest that split's interval is
    moved there from the largest split that can spare one. With many sources this
    never triggers, so a source's split does not depend on which others exist.
    """
    splits = {uri: split_of(uri, seed, fractions) for uri in source_uris}
    intervals = _intervals(fractions)
    for name in SPLITS:
        if fractions.get(name, 0.0) <= 0 or name in splits.values():
            continue
        sizes = {s: list(splits.values()).count(s) for s in set(splits.values())}
        donor = max(sorted(sizes), key=lambda s: sizes[s]) if sizes else None
        if donor is None or sizes[donor] < 2:
            continue
        low, high = intervals[name]
        distance = lambda uri: max(low - _unit_hash(uri, seed), _unit_hash(uri, seed) - high, 0.0)
        moved = min(sorted(u for u, s in splits.items() if s == donor), key=distance)
        splits[moved] = name
    return splits


__all__ = [
    "BUILTIN_PHOTOS",
    "SKIP_REASONS",
    "assign_splits",
    "list_clean",
    "list_files",
    "list_real",
    "load_image",
    "cut_crop",
    "random_crop",
    "resize_short_side",
    "split_of",
]
