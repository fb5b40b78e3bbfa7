"""Shared fixtures: real photos (scikit-image ships them), image measures, a tiny Qwen2.5-VL, services."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images of the same shape (uint8 or float in [0, 1])."""
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return 100.0 if mse == 0 else 10.0 * np.log10(1.0 / mse)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 256×256 uint8 RGB photo (astronaut)."""
    return cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Three different 128×128 uint8 RGB photos."""
    return [cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA) for img in (skdata.astronaut(), skdata.coffee(), skdata.chelsea())]


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A tiny random-weight Qwen2.5-VL checkpoint folder (tests/qwen.py), as the text encoder and the VLM check load it."""
    from tests.qwen import save_tiny_qwen

    return save_tiny_qwen(tmp_path_factory.mktemp("qwen"))


# --- Services: one local Ray, an MLflow server and an S3-protocol server per test session. ---


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port, with AWS_* variables set and bucket `test-bucket`; yields the endpoint URL."""
    import os

    import s3fs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("test-bucket")
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One local Ray for the session (dashboard on: Train V2 needs it). Depends on `s3_server` so that
    Ray's workers inherit the AWS_* variables; shut down at the end (never `ray stop`)."""
    import ray

    ray.init(num_cpus=4, object_store_memory=300 * 2**20, include_dashboard=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite store) on a free loopback port; yields its tracking URI."""
    from realrestorer.tracking import start_local_server, stop_local_server

    uri = start_local_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop_local_server(uri)
