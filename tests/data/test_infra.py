"""Storage, tracking and the shard format against real servers (moto S3, mlflow server)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from realrestorer import storage
from realrestorer.config import load_config
from realrestorer.data.shards import (
    SCHEMA,
    decode_image,
    encode_image,
    read_table,
    shard_uris,
    write_pairs,
)
from realrestorer.tracking import flatten, run


def test_s3_write_then_read_through_moto(s3_server):
    uri = "s3://test-bucket/infra/hello.bin"
    storage.write_bytes(uri, b"restore me")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"restore me"
    assert not storage.exists("s3://test-bucket/infra/missing.bin")
    _, path = storage.filesystem(uri)
    assert path == "test-bucket/infra/hello.bin"
    assert storage.join("s3://test-bucket/", "a/", "/b") == "s3://test-bucket/a/b"


def test_local_paths_resolve_and_unknown_protocols_fail(tmp_path):
    _, path = storage.filesystem(str(tmp_path / "x"))
    assert path == str(tmp_path / "x")
    with pytest.raises(ValueError, match="unsupported URI"):
        storage.filesystem("gs://bucket/key")


def test_mlflow_server_logs_a_run_that_reads_back(mlflow_server):
    cfg = load_config("tiny", [f"tracking.uri={mlflow_server}", "tracking.experiment_prefix=infra"])
    with run(cfg, "synthesize", run_name="check") as active:
        mlflow.log_metric("pairs_per_s", 12.5)
    client = mlflow.MlflowClient(mlflow_server)
    stored = client.get_run(active.info.run_id)
    assert client.get_experiment(stored.info.experiment_id).name == "infra-synthesize"
    assert stored.data.metrics["pairs_per_s"] == 12.5
    assert stored.data.params["data.resolution"] == str(cfg.data.resolution)
    with open(client.download_artifacts(active.info.run_id, "config.json")) as handle:
        logged = json.load(handle)
    assert logged["data"]["resolution"] == cfg.data.resolution


def test_tracking_off_yields_none():
    with run(load_config("tiny"), "synthesize") as active:
        assert active is None
    assert flatten({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": "1", "c": "[1, 2]"}


def test_write_pairs_round_trip_keeps_pixels_and_schema(tmp_path, photo):
    degraded = (photo // 2).astype(np.uint8)
    rows = [
        {"split": "train", "kind": "synthetic", "task": "noise", "clean": photo, "degraded": degraded, "params": {"sigma": 3}},
        {"split": "val", "kind": "proxy", "task": "haze", "clean": encode_image(photo), "degraded": encode_image(degraded)},
    ]
    written = write_pairs(rows, str(tmp_path))
    assert sorted(u.split("/")[-2] for u in written) == ["train", "val"]
    table = read_table(shard_uris(str(tmp_path), split="train")[0])
    assert table.schema.equals(SCHEMA, check_metadata=False)
    row = table.to_pylist()[0]
    assert row["prompt"] == "Please remove noise from the image."
    assert json.loads(row["params"]) == {"sigma": 3}
    assert (row["width"], row["height"]) == (photo.shape[1], photo.shape[0])
    np.testing.assert_array_equal(decode_image(row["clean"]), photo)
    np.testing.assert_array_equal(decode_image(row["degraded"]), degraded)
    assert shard_uris(str(tmp_path), kinds=["proxy"]) == [u for u in written if "/val/" in u]


def test_bad_rows_and_bytes_fail_with_clear_errors(tmp_path, photo):
    with pytest.raises(ValueError, match="lacks required fields"):
        write_pairs([{"split": "train", "task": "noise", "clean": photo, "degraded": photo}], str(tmp_path))
    with pytest.raises(ValueError, match="kind must be one of"):
        write_pairs([{"split": "train", "kind": "fake", "task": "noise", "clean": photo, "degraded": photo}], str(tmp_path))
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(b"not an image at all")
