"""MLflow helpers: a local tracking server, and one run per pipeline stage.

Every stage logs into the experiment `<prefix>-<stage>` with the resolved config
as params (flattened) and as `config.json`, so any run can be reproduced from
what MLflow holds. With `tracking.uri` unset, tracking is off and `run` yields
None.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# MLflow caps a param value at 6000 characters and a batch at 100 params.
_MAX_PARAM_CHARS = 6000
_PARAMS_PER_BATCH = 100

_SERVERS: dict[str, subprocess.Popen] = {}


class TrackingConfig(BaseModel):
    """Where runs are recorded."""

    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. http://127.0.0.1:5000); None turns tracking off.",
    )
    experiment_prefix: str = Field(
        "realrestorer",
        min_length=1,
        description="Experiments are named `<prefix>-<stage>` (e.g. realrestorer-synthesize).",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_local_server(root_dir: str | os.PathLike, port: int | None = None, timeout_s: float = 120.0) -> str:
    """Start `mlflow server` on loopback with a SQLite store under `root_dir`; return its URI once healthy."""
    root = Path(root_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not _healthy(uri):
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode}; see {root / 'server.log'}")
        if time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(f"mlflow server at {uri} not healthy after {timeout_s:.0f} s; see {root / 'server.log'}")
        time.sleep(0.5)
    _SERVERS[uri] = process
    return uri


def stop_local_server(uri: str) -> None:
    """Stop a server started by `start_local_server` (its whole process group: gunicorn/uvicorn workers too)."""
    process = _SERVERS.pop(uri, None)
    if process is None:
        raise ValueError(f"no local mlflow server was started at {uri}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested dict as `a.b.c -> str(value)` (values cut to MLflow's limit)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_CHARS]
    return flat


@contextlib.contextmanager
def run(cfg: Any, stage_name: str, run_name: str | None = None) -> Iterator[Any]:
    """An MLflow run in experiment `<prefix>-<stage_name>` with the resolved config logged; None when tracking is off."""
    tracking: TrackingConfig = cfg.tracking
    if tracking.uri is None:
        yield None
        return
    import mlflow

    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_experiment(f"{tracking.experiment_prefix}-{stage_name}")
    with mlflow.start_run(run_name=run_name) as active:
        resolved = cfg.model_dump(mode="json")
        params = list(flatten(resolved).items())
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            mlflow.log_params(dict(params[start:start + _PARAMS_PER_BATCH]))
        mlflow.log_dict(resolved, "config.json")
        yield active


__all__ = ["TrackingConfig", "flatten", "run", "start_local_server", "stop_local_server"]
