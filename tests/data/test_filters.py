"""Filters reject what they should, sources skip what they should: pure functions, no Ray."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from realrestorer.data import filters
from realrestorer.data.config import DataConfig, FilterConfig
from realrestorer.data.sources import BUILTIN_PHOTOS, assign_splits, list_clean, load_image, split_of
from realrestorer.data.teacher import load_teacher, nlmeans
from realrestorer.degrade import apply, degrade, noise

CFG = FilterConfig()


def keep(clean, degraded, task="noise"):
    return filters.pair_rejection(filters.pair_scores(clean, degraded, CFG), task, CFG)


def test_a_real_degradation_passes_every_filter(photo):
    degraded, _ = degrade("noise", photo, np.random.default_rng(1), 0.5)
    assert keep(photo, degraded) is None


def test_a_pair_shifted_by_3_px_is_rejected_as_misaligned(photo):
    degraded, _ = degrade("noise", photo, np.random.default_rng(1), 0.3)
    shifted = np.roll(degraded, 3, axis=1)
    assert filters.alignment_shift(photo, shifted)[0] == pytest.approx(3.0, abs=0.3)
    assert keep(photo, shifted) == "misaligned"


def test_a_curved_shake_is_aligned_but_a_shifted_blur_pair_is_not(photo):
    # A strongly curved trajectory: its PSF is centred, yet its transfer function's phase reads as a ~2.8 px shift.
    params = {"task": "blur", "kind": "motion", "seed": 1, "extent": 10.0, "curviness": 2.5}
    blurred = apply("blur", photo, params)
    shift, response = filters.alignment_shift(photo, blurred)
    assert shift > 2.0 and response > CFG.min_align_response and keep(photo, blurred, "blur") == "misaligned"
    assert filters.pair_scores(photo, blurred, CFG, params)["shift_px"] < 0.1
    assert filters.pair_rejection(filters.pair_scores(photo, blurred, CFG, params), "blur", CFG) is None
    shifted = np.roll(blurred, 3, axis=1)
    scores = filters.pair_scores(photo, shifted, CFG, params)
    assert scores["shift_px"] == pytest.approx(3.0, abs=0.3)
    assert filters.pair_rejection(scores, "blur", CFG) == "misaligned"
    # Inside a mixed chain the blur step's PSF is taken out the same way; the other steps are still judged.
    noise_step = {"task": "noise", "severity": 0.3, **noise.sample(photo / 255.0, np.random.default_rng(2), 0.3)}
    chain = {"task": "mixed", "steps": [params, noise_step]}
    mixed = apply("mixed", photo, chain)
    assert filters.pair_scores(photo, mixed, CFG, chain)["shift_px"] < 0.2
    moved = filters.pair_scores(photo, np.roll(mixed, 3, axis=0), CFG, chain)
    assert filters.pair_rejection(moved, "mixed", CFG) == "misaligned"


def test_a_no_op_degradation_is_rejected_as_too_weak(photo):
    assert keep(photo, photo.copy()) == "too_weak"


def test_a_destroyed_image_is_rejected(photo):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, photo.shape, dtype=np.uint8)
    assert filters.gradient_ssim(photo, noise) < CFG.gradient_ssim_min
    assert keep(photo, noise) == "destroyed"
    flat = np.full_like(photo, 128)
    assert keep(photo, flat) == "destroyed"


def test_darkening_keeps_gradient_structure(photo):
    dark = (photo.astype(np.float32) * 0.2).astype(np.uint8)
    assert filters.gradient_ssim(photo, dark) > 0.8


def test_phash_finds_near_duplicates_not_different_photos(photos):
    a, b, c = photos
    recompressed = cv2.imdecode(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_UNCHANGED)
    brighter = np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    hashes = [filters.phash(x) for x in (a, b, recompressed, c, brighter)]
    assert filters.hamming(np.uint64(hashes[0]), np.uint64(hashes[1])) > 16
    assert filters.near_duplicates(hashes, max_distance=4).tolist() == [False, False, True, False, True]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width×height: a few KB that would inflate to gigabytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_000, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture
def bad_files(tmp_path, photo):
    good = cv2.imencode(".png", photo)[1].tobytes()
    files = {
        "empty.png": b"",
        "notes.txt": b"these are not pixels",
        "truncated.png": good[: len(good) // 2],
        "bomb.png": _bomb_png(30000, 30000),
        "bomb_below_pil_limit.png": _bomb_png(12000, 12000),  # PIL only warns; our max_pixels decides
        "tiny.png": cv2.imencode(".png", photo[:20, :20])[1].tobytes(),
        "good.png": good,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name,reason", [
    ("empty.png", "empty_file"), ("notes.txt", "not_an_image"), ("truncated.png", "corrupt"),
    ("bomb.png", "decompression_bomb"), ("bomb_below_pil_limit.png", "decompression_bomb"), ("tiny.png", "too_small"), ("good.png", None),
])
def test_each_bad_input_is_skipped_with_its_reason(bad_files, name, reason):
    image, got = load_image(str(bad_files / name), DataConfig(resolution=64))
    assert got == reason
    assert (image is None) == (reason is not None)


def test_a_file_over_the_byte_limit_is_not_read(bad_files):
    assert load_image(str(bad_files / "good.png"), DataConfig(resolution=64, max_file_bytes=1000))[1] == "file_too_large"


def test_the_builtin_photos_load_offline_as_distinct_rgb_photos():
    assert list_clean(None) == list(BUILTIN_PHOTOS)
    photos = {uri: load_image(uri, DataConfig(resolution=64)) for uri in BUILTIN_PHOTOS}
    assert all(reason is None for _, reason in photos.values())
    for uri, (image, _) in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 256, uri
        gray = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        # The grayscale photographs come as RGB with equal channels; the others are colour.
        assert gray == (uri.split("://")[1] in {"camera", "coins", "moon", "grass", "gravel", "brick"}), uri
        assert image.std() > 10, uri  # a photo, not a blank
    hashes = {uri: filters.phash(image) for uri, (image, _) in photos.items()}
    close = {tuple(sorted((a, b))) for a in hashes for b in hashes
             if a != b and filters.hamming(hashes[a], hashes[b]) <= DataConfig().filters.dedup_max_distance}
    assert close == {("skimage://motorcycle_left", "skimage://motorcycle_right")}  # the stereo pair, on purpose
    # Read from the packages' data folders without importing them: the same pixels as their own loaders give.
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    for name in ("china", "flower"):
        assert np.array_equal(photos[f"sklearn://{name}"][0], load_sample_image(f"{name}.jpg")), name
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        assert np.array_equal(photos["matplotlib://grace_hopper"][0], np.asarray(Image.open(handle).convert("RGB")))
    with pytest.raises(ValueError, match="unknown built-in photo"):
        load_image("skimage://horse_in_space", DataConfig(resolution=64))


def test_splits_are_deterministic_and_follow_fractions():
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    uris = [f"s3://b/img{i}.png" for i in range(3000)]
    first = [split_of(u, 7, fractions) for u in uris]
    assert first == [split_of(u, 7, fractions) for u in uris]
    share = np.mean([s == "train" for s in first])
    assert 0.77 < share < 0.83
    assert first != [split_of(u, 8, fractions) for u in uris]


@pytest.mark.parametrize("seed", [1, 4, 8])  # seeds whose hash leaves one or two splits of nine sources empty
def test_small_source_sets_fill_every_split_and_large_ones_keep_the_hash(seed):
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    few = [f"skimage://photo{i}" for i in range(9)]
    hashed = {u: split_of(u, seed, fractions) for u in few}
    assert len(set(hashed.values())) < 3
    assigned = assign_splits(few, seed, fractions)
    assert set(assigned.values()) == {"train", "val", "test"}
    moved = [u for u in few if assigned[u] != hashed[u]]
    # Only as many sources move as there were empty splits, each from the largest split.
    assert len(moved) == 3 - len(set(hashed.values()))
    assert all(hashed[u] == "train" for u in moved)
    assert assign_splits(few, seed, fractions) == assigned
    many = [f"s3://b/img{i}.png" for i in range(500)]
    assert assign_splits(many, seed, fractions) == {u: split_of(u, seed, fractions) for u in many}
    # Too few sources to give each split one: nothing is invented.
    assert list(assign_splits(["only.png"], seed, fractions).values()) == [split_of("only.png", seed, fractions)]


def test_nlmeans_teacher_reduces_noise(photo):
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    restored = load_teacher("nlmeans")(noisy)
    assert filters.psnr(photo, restored) > filters.psnr(photo, noisy) + 2.0
    assert load_teacher("realrestorer.data.teacher:nlmeans") is nlmeans
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_teacher("no_such_module:fn")


@pytest.mark.parametrize("scope", ["source", "crop"])
def test_quality_filter_drops_a_noisy_source_and_records_its_score(tmp_path, photo, scope):
    from realrestorer.config import load_config
    from realrestorer.data.shards import read_table, shard_uris
    from realrestorer.data.sources import resize_short_side
    from realrestorer.data.synthesize import ShardBuilder

    # Crop positions follow the source URI (tmp_path), so the crop case must hold wherever the crops fall:
    # 128-px crops and stronger noise keep every clean crop's PIQE below every noisy crop's (checked below on a grid).
    sigma, resolution = (40, 64) if scope == "source" else (60, 128)
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0, sigma, photo.shape), 0, 255).astype(np.uint8)
    for name, image in (("clean.png", photo), ("noisy.png", noisy)):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cfg = load_config("tiny", [f"data.output={tmp_path / 'out'}", "data.crops_per_image=3", "data.build_proxy=false",
                               "data.resize_short_side=256", "data.crop_scale_max=1",
                               f"data.resolution={resolution}", f"data.filters.quality_scope={scope}"])
    scorer = filters.QualityScorer(cfg.data.filters)
    images = {n: resize_short_side(cv2.cvtColor(cv2.imread(str(tmp_path / n)), cv2.COLOR_BGR2RGB), cfg.data.short_side)
              for n in ("clean.png", "noisy.png")}
    if scope == "source":
        piqe = {n: scorer(image)["piqe"] for n, image in images.items()}
        assert piqe["noisy.png"] > piqe["clean.png"] + 10  # PIQE: lower is better
        cfg.data.filters.piqe_max = (piqe["clean.png"] + piqe["noisy.png"]) / 2
    else:
        step, side = resolution // 8, images["clean.png"].shape[0]
        grid = {n: [scorer(image[y:y + resolution, x:x + resolution])["piqe"]
                    for y in range(0, side - resolution + 1, step) for x in range(0, side - resolution + 1, step)]
                for n, image in images.items()}
        assert max(grid["clean.png"]) + 3 < min(grid["noisy.png"])
        cfg.data.filters.piqe_max = (max(grid["clean.png"]) + min(grid["noisy.png"])) / 2
    builder = ShardBuilder(cfg, cfg.data.output, filters.QualityScorer(cfg.data.filters), None)
    stats = builder.build({"split": "train", "kind": "synthetic", "index": 0,
                           "items": [{"source": str(tmp_path / n), "crops": crops}  # each source in two units, as a shard cap cuts it
                                     for n in ("clean.png", "noisy.png") for crops in ([0, 2], [2, 3])]})
    rows = [r for uri in shard_uris(cfg.data.output) for r in read_table(uri).to_pylist()]
    assert rows and {r["source_uri"] for r in rows} == {str(tmp_path / "clean.png")}
    if scope == "source":
        # One rejection for the source (not one per unit), and every crop records its source's score.
        assert stats["rejections"].get("low_quality") == 1
        assert all(abs(r["scores"]["piqe"] - piqe["clean.png"]) < 1e-3 for r in rows)
    else:
        # Scored crop by crop: each of the noisy source's three crops is rejected, and each kept row records
        # the score of its own crop, under the threshold.
        assert stats["rejections"].get("low_quality", 0) >= 3
        for r in rows:
            x, y, w, h = r["crop"]
            own = scorer(np.ascontiguousarray(images["clean.png"][y:y + h, x:x + w]))["piqe"]
            assert abs(r["scores"]["piqe"] - own) < 1e-3 and own <= cfg.data.filters.piqe_max
