"""The Parquet shard format (ARCHITECTURE.md): one row per pair, shards under `<root>/<split>/`.

Layout of a dataset folder:

    <root>/manifest.json                      resolved config, counts, rejections, throughput
    <root>/<split>/<kind>-<index>.parquet     the pairs (split: train/val/test; kind: synthetic/real/proxy)
    <root>/_done/<split>-<kind>-<index>.json  per-shard stats; present only once the shard is complete
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from realrestorer import storage
from realrestorer.data.config import KINDS, QUALITY_METRICS, SPLITS
from realrestorer.degrade import TASKS

# vlm_task_prob: the judge's probability of its predicted task; vlm_agrees: 1 when that task is the pair's label.
SCORE_FIELDS = (*QUALITY_METRICS, "psnr", "gradient_ssim", "shift_px", "align_response", "vlm_task_prob", "vlm_agrees")
SCORES_TYPE = pa.struct([pa.field(name, pa.float32()) for name in SCORE_FIELDS])

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("crop", pa.list_(pa.int32(), 4)),
        pa.field("seed", pa.int64()),
        pa.field("params", pa.string()),
        pa.field("clean", pa.binary(), nullable=False),
        pa.field("degraded", pa.binary(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("scores", SCORES_TYPE),
        # The VLM judge's verdict (data/vlm.py); null for pairs it did not check.
        pa.field("vlm_task", pa.string()),
        pa.field("vlm_severity", pa.string()),
    ],
    metadata={"format": "realrestorer-pairs", "version": "2"},
)


PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG (or any OpenCV-readable) bytes → H×W×3 uint8 RGB."""
    if not data:
        raise ValueError("cannot decode an empty byte string as an image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"bytes ({len(data)} B, starting {bytes(data[:8])!r}) are not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_stack(images: list[bytes], what: str) -> np.ndarray:
    """Encoded images of one size → N×H×W×3 uint8; a one-line error naming `what` and the sizes when they differ."""
    decoded = [decode_image(b) for b in images]
    shapes = sorted({img.shape[:2] for img in decoded})
    if len(shapes) > 1:
        raise ValueError(f"{what} must share one size to be batched; got sizes {shapes[:4]}{' …' if len(shapes) > 4 else ''} "
                         "(the dataset builder crops every pair to data.resolution)")
    return np.stack(decoded)


def encode_image(rgb: np.ndarray, fmt: str = "png", jpeg_quality: int = 97) -> bytes:
    """H×W×3 uint8 RGB → PNG (lossless) or JPEG bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {rgb.dtype} {rgb.shape}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        # Level 1 with the "up" row filter and run-length matching: 2.4× faster than level 1 with the default
        # adaptive filters, and smaller (measured on 256² photo crops: 3.5 vs 8.5 ms, 125 vs 128 KB).
        ok, buf = cv2.imencode(".png", bgr, PNG_PARAMS)
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f"unknown image format {fmt!r}; use 'png' or 'jpeg'")
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def pair_id(*parts: Any) -> str:
    """A stable 16-hex-digit id from the parts that define a sample."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _as_bytes(value: Any) -> bytes:
    return encode_image(value) if isinstance(value, np.ndarray) else bytes(value)


def _complete_row(row: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in ("split", "kind", "task", "clean", "degraded") if key not in row]
    if missing:
        raise ValueError(f"pair row lacks required fields {missing}")
    if row["split"] not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {row['split']!r}")
    if row["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {row['kind']!r}")
    clean, degraded = _as_bytes(row["clean"]), _as_bytes(row["degraded"])
    height, width = row.get("height"), row.get("width")
    if height is None or width is None:
        height, width = decode_image(clean).shape[:2]
    if "prompt" not in row and row["task"] not in TASKS:
        raise ValueError(f"task {row['task']!r} has no fixed prompt: give the row a 'prompt'")
    scores = {name: None for name in SCORE_FIELDS}
    unknown = sorted(set(row.get("scores") or {}) - set(SCORE_FIELDS))
    if unknown:
        raise ValueError(f"unknown score fields {unknown}; known: {', '.join(SCORE_FIELDS)}")
    scores.update({k: (None if v is None else float(v)) for k, v in (row.get("scores") or {}).items()})
    params = row.get("params", {})
    return {
        "id": row.get("id") or hashlib.sha256(clean + degraded).hexdigest()[:16],
        "split": row["split"],
        "kind": row["kind"],
        "task": row["task"],
        "prompt": row.get("prompt") or TASKS[row["task"]],
        "source_uri": row.get("source_uri", ""),
        "crop": [int(v) for v in row.get("crop", (0, 0, width, height))],
        "seed": int(row.get("seed", 0)),
        "params": params if isinstance(params, str) else json.dumps(params, sort_keys=True),
        "clean": clean,
        "degraded": degraded,
        "width": int(width),
        "height": int(height),
        "scores": scores,
        "vlm_task": row.get("vlm_task"),
        "vlm_severity": row.get("vlm_severity"),
    }


def shard_name(split: str, kind: str, index: int) -> str:
    """The relative path of shard `index` of a split and kind."""
    return f"{split}/{kind}-{index:05d}.parquet"


def write_table(table: pa.Table, uri: str, storage_cfg: storage.StorageConfig | None = None) -> None:
    """Write one Parquet file at `uri` (local or s3)."""
    buffer = io.BytesIO()
    # Pixels are already PNG/JPEG; Parquet compression would only cost time.
    pq.write_table(table, buffer, compression="none")
    storage.write_bytes(uri, buffer.getvalue(), storage_cfg)


def write_pairs(
    rows: Iterable[dict[str, Any]],
    uri: str,
    storage_cfg: storage.StorageConfig | None = None,
    index: int = 0,
) -> list[str]:
    """Write pair rows under dataset folder `uri` as shards `<split>/<kind>-<index>.parquet`; return their URIs.

    Rows need `split`, `kind`, `task`, `clean` and `degraded` (PNG/JPEG bytes or
    H×W×3 uint8 arrays); the other fields get defaults (prompt from the task).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        full = _complete_row(row)
        groups.setdefault((full["split"], full["kind"]), []).append(full)
    if not groups:
        raise ValueError("write_pairs got no rows")
    written = []
    for (split, kind), group in sorted(groups.items()):
        target = storage.join(uri, shard_name(split, kind, index))
        write_table(pa.Table.from_pylist(group, schema=SCHEMA), target, storage_cfg)
        written.append(target)
    return written


def shard_uris(root_uri: str, split: str | Iterable[str] | None = None, kinds: Iterable[str] | None = None,
               storage_cfg: storage.StorageConfig | None = None) -> list[str]:
    """The shard files of a dataset folder, sorted, optionally of some splits and some kinds."""
    splits = SPLITS if split is None else ((split,) if isinstance(split, str) else tuple(split))
    if not splits or set(splits) - set(SPLITS):
        raise ValueError(f"split must be one or more of {SPLITS}, got {split!r}")
    kinds = tuple(KINDS if kinds is None else kinds)
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise ValueError(f"unknown kinds {bad}; use {', '.join(KINDS)}")
    fs, path = storage.filesystem(root_uri, storage_cfg)
    found = []
    for name in splits:
        for kind in kinds:
            found += fs.glob(f"{path}/{name}/{kind}-*.parquet")
    return sorted(storage.with_protocol(fs, p) for p in found)


def read_shards(root_uri: str, split: str | Iterable[str] | None = None, kinds: Iterable[str] | None = None,
                storage_cfg: storage.StorageConfig | None = None):
    """The pairs of a dataset folder as a `ray.data.Dataset` (optionally some splits, some kinds)."""
    uris = shard_uris(root_uri, split, kinds, storage_cfg)
    if not uris:
        raise ValueError(f"no shards under {root_uri} for split={split!r} kinds={kinds!r}")
    return read_shard_files(uris, storage_cfg)


def read_shard_files(uris: list[str], storage_cfg: storage.StorageConfig | None = None):
    """Some shard files of one dataset (as `shard_uris` lists them) as a `ray.data.Dataset`."""
    import pyarrow.fs as pafs
    import ray.data

    fs, _ = storage.filesystem(uris[0], storage_cfg)
    paths = [storage.filesystem(u, storage_cfg)[1] for u in uris]
    return ray.data.read_parquet(paths, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)))


def num_rows(uri: str, storage_cfg: storage.StorageConfig | None = None) -> int:
    """The row count of one shard file, from its Parquet footer alone (no pixels are read)."""
    fs, path = storage.filesystem(uri, storage_cfg)
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def read_table(uri: str, storage_cfg: storage.StorageConfig | None = None) -> pa.Table:
    """One shard file as a pyarrow Table (no Ray)."""
    return pq.read_table(io.BytesIO(storage.read_bytes(uri, storage_cfg)))


__all__ = [
    "KINDS",
    "SCHEMA",
    "SCORE_FIELDS",
    "decode_image",
    "encode_image",
    "num_rows",
    "pair_id",
    "read_shard_files",
    "read_shards",
    "read_table",
    "shard_name",
    "shard_uris",
    "write_pairs",
    "write_table",
]
