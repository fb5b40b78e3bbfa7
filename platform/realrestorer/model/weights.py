"""Pretrained components come from a local directory or an s3:// URI, never from a hub."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is absent; the message names the file and the config key that points at it."""


def _cache_root() -> Path:
    return Path(os.environ.get("REALRESTORER_CACHE", Path.home() / ".cache" / "realrestorer")) / "weights"


def _download(uri: str, key: str) -> Path:
    # Remote directories are mirrored into a cache named by the URI and its listing (names, sizes, ETags),
    # so from_pretrained reads local files and a rewritten checkpoint is fetched again. The training workers of
    # one node (one per GPU) all ask at once: one of them downloads under a lock while the others wait, so
    # the files are fetched once and nobody reads a file another process is still writing.
    import fcntl
    import shutil

    from realrestorer.storage import filesystem

    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise MissingWeightsError(f"{key}: {uri} not found")
    listing = fs.find(path, detail=True)
    fingerprint = json.dumps(
        sorted((name, info.get("size"), str(info.get("ETag", info.get("mtime")))) for name, info in listing.items())
    )
    digest = hashlib.sha256((uri + fingerprint).encode()).hexdigest()[:16]
    local = _cache_root() / digest
    marker = local / ".complete"
    if marker.exists():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(local.parent / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            # Whatever an interrupted download left is fetched again.
            shutil.rmtree(local, ignore_errors=True)
            for name in listing:
                target = local / name[len(path) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(name, str(target))
            marker.touch()
    return local


def resolve_dir(uri: str, key: str, required: tuple[tuple[str, ...], ...]) -> Path:
    """A local directory holding one file of each group in `required` (alternative relative names, as
    `check_files` takes them) for the component named by config `key`."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    local = _download(uri, key) if "://" in uri else Path(uri).expanduser()
    if not local.is_dir():
        raise MissingWeightsError(f"{key}: directory {uri} not found")
    for names in required:
        require_one_of(local, uri, key, names)
    return local


def _absent(uri: str, key: str, names: tuple[str, ...]) -> MissingWeightsError:
    others = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    return MissingWeightsError(f"{key}: {uri.rstrip('/')}/{names[0]}{others} not found")


def require_one_of(local: Path, uri: str, key: str, names: tuple[str, ...]) -> Path:
    """The first of `names` present in `local`; a one-line error naming them when none is."""
    for name in names:
        if (local / name).is_file():
            return local / name
    raise _absent(uri, key, names)


def check_files(uri: str, key: str, groups: tuple[tuple[str, ...], ...]) -> None:
    """Fail early, downloading nothing: `uri` must hold one file of each group of alternative names.

    A driver calls this before it starts workers that load the weights, so a wrong path is one line, not a
    traceback from inside a worker.
    """
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" not in uri:
        local = Path(uri).expanduser()
        if not local.is_dir():
            raise MissingWeightsError(f"{key}: directory {uri} not found")
        for names in groups:
            require_one_of(local, uri, key, names)
        return
    from realrestorer.storage import filesystem

    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise MissingWeightsError(f"{key}: {uri} not found")
    for names in groups:
        if not any(fs.isfile(f"{path.rstrip('/')}/{name}") for name in names):
            raise _absent(uri, key, names)
