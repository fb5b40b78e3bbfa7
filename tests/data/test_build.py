"""The builder end to end on a local Ray: determinism, splits, bad inputs, S3, resume, real pairs, mixing, MLflow."""

from __future__ import annotations

import json

import cv2
import mlflow
import numpy as np
import pytest
from realrestorer import storage
from realrestorer.config import load_config
from realrestorer.data.build import build_dataset, plan_shards
from realrestorer.data.config import MixingConfig
from realrestorer.data.mixing import MixingReader
from realrestorer.data.shards import decode_image, read_shards, read_table, shard_uris
from realrestorer.data.sources import BUILTIN_PHOTOS, load_image
from realrestorer.data.teacher import nlmeans

# Tiny and fast: two 64² crops per photo, no pyiqa in the actors (PIQE runs in the smoke test).
FAST = ["data.crops_per_image=2", "data.images_per_shard=3", "data.filters.quality_metrics=[]"]


def build(output, *overrides):
    return build_dataset(load_config("tiny", [*FAST, f"data.output={output}", *overrides]))


def rows_of(output):
    return [row for uri in shard_uris(str(output)) for row in read_table(uri).to_pylist()]


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    output = tmp_path_factory.mktemp("built")
    return output, build(output)


def test_the_builtin_set_makes_synthetic_and_proxy_pairs(built):
    output, summary = built
    rows = rows_of(output)
    assert summary["num_pairs"] == len(rows) > 20
    assert {r["kind"] for r in rows} == {"synthetic", "proxy"}
    assert summary["rejections"]["near_duplicate"] == 1  # the stereo motorcycle pair
    for row in rows:
        clean, degraded = decode_image(row["clean"]), decode_image(row["degraded"])
        assert clean.shape == degraded.shape == (64, 64, 3)
        assert not np.array_equal(clean, degraded)
        assert row["scores"]["psnr"] < 40.0 and row["scores"]["shift_px"] is not None
    proxy = [r for r in rows if r["kind"] == "proxy"]
    assert all(r["task"] == "mixed" and [p["task"] for p in json.loads(r["params"])["chain"]] == ["mixed", "web"]
               for r in proxy)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["num_pairs"] == len(rows) and manifest["config"]["data"]["crops_per_image"] == 2
    assert sum(n for kinds in manifest["counts"].values() for tasks in kinds.values() for n in tasks.values()) == len(rows)


def test_same_seed_gives_identical_shards_and_another_seed_does_not(built, tmp_path):
    output, _ = built
    build(tmp_path / "again")
    first, again = rows_of(output), rows_of(tmp_path / "again")
    assert first == again
    build(tmp_path / "other", "seed=1", "data.crops_per_image=1", "data.build_proxy=false")
    assert {r["id"] for r in rows_of(tmp_path / "other")}.isdisjoint({r["id"] for r in first})


def test_the_crop_cap_cuts_sources_across_shards_without_changing_the_pairs(built, tmp_path):
    data = load_config("tiny", ["data.images_per_shard=2", "data.crops_per_image=5", "data.max_crops_per_shard=4"]).data
    plan = plan_shards({"train": ["a", "b", "c"], "val": ["d"]}, "synthetic", data)
    assert [(s["split"], s["index"], [(i["source"], *i["crops"]) for i in s["items"]]) for s in plan] == [
        ("train", 0, [("a", 0, 4)]), ("train", 1, [("a", 4, 5), ("b", 0, 3)]), ("train", 2, [("b", 3, 5)]),
        ("train", 3, [("c", 0, 4)]), ("train", 4, [("c", 4, 5)]), ("val", 0, [("d", 0, 4)]), ("val", 1, [("d", 4, 5)])]
    # On the builder, in a copy of a finished build: one crop per shard rebuilds every shard (their markers name
    # other items) and gives the very pairs and counts of the default plan.
    import shutil

    output, summary = built
    by_id = lambda rows: sorted(rows, key=lambda r: r["id"])  # noqa: E731
    shutil.copytree(output, tmp_path / "cut")
    cut = build(tmp_path / "cut", "data.max_crops_per_shard=1")
    assert cut["shards"]["total"] == cut["shards"]["built"] > summary["shards"]["total"]
    assert by_id(rows_of(tmp_path / "cut")) == by_id(rows_of(output))
    assert cut["counts"] == summary["counts"] and cut["rejections"] == summary["rejections"]
    # Back to the default plan in the same folder: the shards it does not name are removed, none is read twice.
    again = build(tmp_path / "cut")
    assert again["shards"]["removed"] == cut["shards"]["total"] - summary["shards"]["total"]
    assert by_id(rows_of(tmp_path / "cut")) == by_id(rows_of(output))


def test_each_degraded_pair_reproduces_from_its_params(built):
    from realrestorer.degrade import apply

    rows = [r for r in rows_of(built[0]) if r["kind"] == "synthetic"][:5]
    for row in rows:
        clean = decode_image(row["clean"])
        np.testing.assert_array_equal(apply(row["task"], clean, json.loads(row["params"])), decode_image(row["degraded"]))


def test_multi_scale_crops_are_their_recorded_windows_resized(ray_session, tmp_path):
    from realrestorer.data.sources import random_crop, resize_short_side

    summary = build(tmp_path / "ms", "data.crops_per_image=6", "data.build_proxy=false", "data.resize_short_side=256",
                    "data.crop_scale_max=3")
    rows = rows_of(tmp_path / "ms")
    assert summary["num_pairs"] == len(rows) > 20
    windows = [row["crop"][2] for row in rows]
    assert min(windows) >= 64 and max(windows) <= 192 and len(set(windows)) > len(windows) // 2
    data = load_config("tiny", ["data.resize_short_side=256"]).data
    sources = {}
    for row in rows[:8]:
        if row["source_uri"] not in sources:
            sources[row["source_uri"]] = resize_short_side(load_image(row["source_uri"], data)[0], 256)
        x, y, w, h = row["crop"]
        assert w == h and (row["width"], row["height"]) == (64, 64)
        expected = cv2.resize(sources[row["source_uri"]][y:y + h, x:x + w], (64, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(decode_image(row["clean"]), expected)
    # Scale 1 draws nothing extra: the windows (and so every pair) of a build without multi-scale crops stay as they were.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert random_crop((256, 300, 3), 64, rng_a) == random_crop((256, 300, 3), 64, rng_b, 1.0)
    assert rng_a.random() == rng_b.random()
    assert random_crop((70, 300, 3), 64, np.random.default_rng(0), 8.0)[2] <= 70  # capped by the image


def test_splits_are_disjoint_by_source(built):
    sources: dict[str, set[str]] = {}
    for row in rows_of(built[0]):
        sources.setdefault(row["split"], set()).add(row["source_uri"])
    assert len(sources) >= 2
    splits = list(sources)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert sources[a].isdisjoint(sources[b]), (a, b)


def test_resume_builds_only_the_missing_shards(built, tmp_path):
    import shutil

    output = tmp_path / "resume"
    shutil.copytree(built[0], output)
    done = sorted((output / "_done").glob("*.json"))
    # An interrupted run: one shard written but never marked, one not written at all.
    done[0].unlink()
    lost = json.loads(done[1].read_text())["shard"]
    done[1].unlink()
    (output / lost).unlink()
    summary = build(output)
    assert summary["shards"] == {"total": len(done), "built": 2, "skipped": len(done) - 2, "removed": 0}
    assert rows_of(output) == rows_of(built[0])
    assert build(output)["shards"]["built"] == 0


def _write_images(folder, photos):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in photos.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize("scan", ["driver", "ray_data"])  # few sources are scanned in the driver, many on Ray Data
def test_bad_inputs_are_skipped_and_counted(ray_session, tmp_path, monkeypatch, scan):
    from realrestorer.data import build as build_module
    from tests.data.test_filters import _bomb_png

    if scan == "ray_data":
        monkeypatch.setattr(build_module, "SCAN_IN_DRIVER_MAX", 0)

    clean = tmp_path / "clean"
    _write_images(clean, {f"{n}.png": load_image(f"skimage://{n}", load_config("tiny").data)[0][:256, :256]
                          for n in ("astronaut", "coffee", "chelsea")})
    good = (clean / "coffee.png").read_bytes()
    (clean / "empty.jpg").write_bytes(b"")
    (clean / "readme.txt").write_text("not an image")
    (clean / "cut.png").write_bytes(good[: len(good) // 3])
    (clean / "bomb.png").write_bytes(_bomb_png(30000, 30000))
    cv2.imwrite(str(clean / "small.png"), np.zeros((20, 30, 3), np.uint8))
    (clean / "copy.png").write_bytes(good)
    summary = build(tmp_path / "out", f"data.clean_source={clean}", "data.build_proxy=false")
    for reason in ("empty_file", "not_an_image", "corrupt", "decompression_bomb", "too_small", "near_duplicate"):
        assert summary["rejections"][reason] == 1, reason
    sources = {r["source_uri"].rsplit("/", 1)[-1] for r in rows_of(tmp_path / "out")}
    assert sources <= {"astronaut.png", "coffee.png", "chelsea.png"} and len(sources) >= 2


def test_s3_round_trip_through_moto(ray_session, s3_server, tmp_path):
    photos = {f"{u.split('://')[1]}.png": load_image(u, load_config("tiny").data)[0] for u in BUILTIN_PHOTOS[:4]}
    for name, image in photos.items():
        storage.write_bytes(f"s3://test-bucket/clean/{name}", cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes())
    output = "s3://test-bucket/datasets/pairs"
    summary = build(output, "data.clean_source=s3://test-bucket/clean", f"storage.s3_endpoint_url={s3_server}")
    manifest = json.loads(storage.read_bytes(f"{output}/manifest.json"))
    assert manifest["num_pairs"] == summary["num_pairs"] > 0
    pairs = read_shards(output).take_all()
    assert len(pairs) == summary["num_pairs"]
    assert {p["source_uri"] for p in pairs} <= {f"s3://test-bucket/clean/{n}" for n in photos}
    assert decode_image(pairs[0]["clean"]).shape == (64, 64, 3)
    assert len(read_shards(output, kinds=["proxy"]).take_all()) == sum(
        n for kinds in summary["counts"].values() for n in kinds.get("proxy", {}).values())


def test_real_pairs_with_and_without_references(ray_session, tmp_path):
    real = tmp_path / "real"
    rng = np.random.default_rng(0)
    for n, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        clean = cv2.resize(load_image(f"skimage://{name}", load_config("tiny").data)[0], (160, 128))
        noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
        _write_images(real / "noise" / "degraded", {f"{name}.png": noisy})
        if n % 2 == 0:  # half have a reference, the others need the teacher
            _write_images(real / "noise" / "reference", {f"{name}.png": clean})
    build(tmp_path / "out", f"data.real_source={real}", "data.splits={train: 1.0}")
    rows = [r for r in rows_of(tmp_path / "out") if r["kind"] == "real"]
    origins = {r["source_uri"].rsplit("/", 1)[-1]: json.loads(r["params"])["reference"] for r in rows}
    assert origins.get("coffee.png") == "teacher:nlmeans" or origins.get("rocket.png") == "teacher:nlmeans"
    assert any(v.endswith(("reference/astronaut.png", "reference/chelsea.png")) for v in origins.values())
    assert all(r["task"] == "noise" and r["prompt"] == "Please remove noise from the image." for r in rows)
    teacher_row = next(r for r in rows if json.loads(r["params"])["reference"] == "teacher:nlmeans")
    x, y, w, h = teacher_row["crop"]
    degraded_full = cv2.cvtColor(cv2.imread(teacher_row["source_uri"]), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_image(teacher_row["clean"]), nlmeans(degraded_full)[y:y + h, x:x + w])


def test_mixing_reader_hits_the_ratio(built):
    output = str(built[0])
    synthetic_ds, proxy_ds = read_shards(output, kinds=["synthetic"]), read_shards(output, kinds=["proxy"])
    # Ray Datasets (or a Train worker's DataIterator) feed the reader directly...
    batch = next(MixingReader(synthetic_ds, proxy_ds, MixingConfig(web_augment_prob=1.0), batch_size=16, num_steps=10))
    assert batch["clean"].shape == batch["degraded"].shape == (16, 64, 64, 3) and batch["clean"].dtype == np.uint8
    assert set(batch["kind"]) <= {"synthetic", "proxy"}
    # ...and so do rows in memory: cycling a tiny set many times without re-running a Ray pipeline per epoch.
    synthetic, proxy = synthetic_ds.take_all(), proxy_ds.take_all()
    fixed = MixingConfig(final_ratio=0.75, decay_fraction=0.0, web_augment_prob=0.5)
    reader = MixingReader(synthetic, proxy, fixed, batch_size=16, num_steps=100, seed=3)
    kinds = [k for _, batch in zip(range(40), reader) for k in batch["kind"]]
    assert abs(np.mean([k == "synthetic" for k in kinds]) - 0.75) < 0.05
    for prob, changed in ((0.0, 0), (1.0, 4)):
        only_synthetic = MixingConfig(final_ratio=1.0, web_augment_prob=prob)
        plain = next(MixingReader(synthetic, proxy, only_synthetic, batch_size=4, num_steps=10))
        stored = [decode_image(r["degraded"]) for r in synthetic[:4]]
        assert sum(not np.array_equal(a, b) for a, b in zip(plain["degraded"], stored)) == changed
        assert all(np.array_equal(a, decode_image(r["clean"])) for a, r in zip(plain["clean"], synthetic[:4]))
    progressive = MixingReader(synthetic, proxy, MixingConfig(schedule=[(0.0, 1.0), (1.0, 0.0)], web_augment_prob=0.0),
                               batch_size=8, num_steps=11)
    batches = [next(progressive) for _ in range(12)]
    assert set(batches[0]["kind"]) == {"synthetic"} and set(batches[10]["kind"]) == {"proxy"}
    assert [b["synthetic_ratio"] for b in batches[::5]] == [1.0, 0.5, 0.0]


def test_tracking_logs_counts_and_a_contact_sheet(ray_session, mlflow_server, tmp_path):
    summary = build(tmp_path / "out", f"tracking.uri={mlflow_server}", "tracking.experiment_prefix=data-test")
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("data-test-synthesize")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["num_pairs"] == summary["num_pairs"]
    assert run.data.params["data.crops_per_image"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"contact_sheet.png", "manifest.json", "config.json"} <= artifacts
    sheet = cv2.imread(client.download_artifacts(run.info.run_id, "contact_sheet.png"))
    assert sheet.shape[1] == 256 and sheet.shape[0] % 128 == 0 and sheet.shape[0] >= 3 * 128


def _reflection_steps(params):
    if params.get("task") == "reflection":
        return [params]
    return [step for step in params.get("steps", []) if step["task"] == "reflection"]


def test_reflection_layers_are_picked_per_sample_and_leave_their_colour(ray_session, tmp_path):
    from realrestorer.data.layers import fit_square
    from realrestorer.degrade import apply

    layers = tmp_path / "layers"
    colours = {"red.png": (255, 0, 0), "blue.png": (0, 0, 255)}
    _write_images(layers, {name: np.full((80, 120, 3), colour, np.uint8) for name, colour in colours.items()})
    (layers / "broken.png").write_bytes(b"not an image")
    common = ["data.task_weights={reflection: 1.0}", "data.mixed_share=0.3", "data.build_proxy=false",
              "data.splits={train: 1.0}", "degrade.severity_min=0.5"]
    summary = build(tmp_path / "out", f"degrade.reflection_layers={layers}", *common)
    assert summary["reflection_layers"] == {"source": str(layers), "num_layers": 2, "skipped": {"not_an_image": 1}}
    rows = rows_of(tmp_path / "out")
    picked = []
    for row in rows:
        params = json.loads(row["params"])
        clean, degraded = decode_image(row["clean"]), decode_image(row["degraded"])
        for step in _reflection_steps(params):
            assert step["layer"] == "external"
            picked.append(name := step["layer_uri"].rsplit("/", 1)[-1])
            layer = fit_square(np.full((80, 120, 3), colours[name], np.uint8), 64)
            np.testing.assert_array_equal(apply(row["task"], clean, params, reflection=layer), degraded)
            if row["task"] == "reflection":
                # The reflected light lands in the layer's own channel: red pushes R up against B, blue the reverse.
                shift = degraded.astype(np.float64).mean(axis=(0, 1)) - clean.astype(np.float64).mean(axis=(0, 1))
                towards = shift[0] - shift[2] if name == "red.png" else shift[2] - shift[0]
                assert towards > 5.0, (name, shift)
    assert set(picked) == set(colours) and any(r["task"] == "mixed" for r in rows)
    # The same seed picks the same layers; without the setting, reflections come from the scene as before.
    build(tmp_path / "again", f"degrade.reflection_layers={layers}", *common)
    assert rows_of(tmp_path / "again") == rows
    build(tmp_path / "plain", *common)
    plain = {r["id"]: r for r in rows_of(tmp_path / "plain")}
    layers_used = set()
    for row in rows:
        if row["id"] in plain:  # tasks and crops are drawn before the layer, so a sample keeps both
            assert plain[row["id"]]["crop"] == row["crop"]
            for step in _reflection_steps(json.loads(plain[row["id"]]["params"])):
                layers_used.add(step["layer"])
                assert "layer_uri" not in step
    assert layers_used and layers_used <= {"scene", "procedural"}
