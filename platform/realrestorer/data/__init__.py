"""The dataset builder: sources → crops → degradations → filters → Parquet shards (Ray Data).

`build_dataset(cfg)` runs the whole builder and returns its summary;
`read_shards` / `write_pairs` read and write the shard format. Submodules that
need Ray are imported on first use, so reading the config stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_dataset": "realrestorer.data.build",
    "read_shards": "realrestorer.data.shards",
    "write_pairs": "realrestorer.data.shards",
    "decode_image": "realrestorer.data.shards",
    "SCHEMA": "realrestorer.data.shards",
    "MixingReader": "realrestorer.data.mixing",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'realrestorer.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = list(_EXPORTS)
