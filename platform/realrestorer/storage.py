"""Where bytes live: every path is an fsspec URI, a local path or `s3://bucket/key`.

A run moves from a laptop to a cluster by changing URIs, nothing else. S3
credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID, ...); the
endpoint from `storage.s3_endpoint_url` or AWS_ENDPOINT_URL (an S3-protocol
server such as MinIO or moto).
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator


class StorageConfig(BaseModel):
    """Where datasets, checkpoints and artifacts go."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(
        "./runs",
        description="Root URI (local path or s3://bucket/prefix) under which datasets, checkpoints and artifacts are written.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-protocol server; None uses AWS_ENDPOINT_URL or AWS itself.",
    )

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("storage.root must be a local path or an s3:// URI, got an empty string")
        return value


def _is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def filesystem(uri: str, storage_cfg: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving `uri` and the path inside it (no protocol prefix)."""
    if _is_s3(uri):
        endpoint = (storage_cfg.s3_endpoint_url if storage_cfg else None) or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
        # Listings are cached by default; a builder that writes then lists must see its own files.
        fs = fsspec.filesystem("s3", use_listings_cache=False, **kwargs)
        return fs, uri.split("://", 1)[1].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI {uri!r}: use a local path or s3://bucket/key")
    path = uri.removeprefix("file://")
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path))


def join(uri: str, *parts: str) -> str:
    """`uri` with path components appended, keeping its protocol."""
    out = uri.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def exists(uri: str, storage_cfg: StorageConfig | None = None) -> bool:
    """Whether a file or folder exists at `uri`."""
    fs, path = filesystem(uri, storage_cfg)
    return bool(fs.exists(path))


def with_protocol(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path returned by `fs.glob`/`fs.ls` as a full URI again."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"s3://{path}" if protocol in ("s3", "s3a") else path


def read_bytes(uri: str, storage_cfg: StorageConfig | None = None) -> bytes:
    """The whole content of the file at `uri`."""
    fs, path = filesystem(uri, storage_cfg)
    with fs.open(path, "rb") as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes, storage_cfg: StorageConfig | None = None) -> None:
    """Write `data` to `uri`, creating parent folders on local disks."""
    fs, path = filesystem(uri, storage_cfg)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(data)


__all__ = ["StorageConfig", "exists", "filesystem", "join", "read_bytes", "with_protocol", "write_bytes"]
