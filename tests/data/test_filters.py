"""Filters reject what they should, sources skip what they should: pure functions, no Ray."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from realrestorer.data import filters
from realrestorer.data.config import DataConfig, FilterConfig, MixingConfig
from realrestorer.data.mixing import ratio_at
from realrestorer.data.sources import load_image, split_of
from realrestorer.data.teacher import load_teacher, nlmeans
from realrestorer.degrade import degrade

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


def test_splits_are_deterministic_and_follow_fractions():
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    uris = [f"s3://b/img{i}.png" for i in range(3000)]
    first = [split_of(u, 7, fractions) for u in uris]
    assert first == [split_of(u, 7, fractions) for u in uris]
    share = np.mean([s == "train" for s in first])
    assert 0.77 < share < 0.83
    assert first != [split_of(u, 8, fractions) for u in uris]


def test_nlmeans_teacher_reduces_noise(photo):
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0, 15, photo.shape), 0, 255).astype(np.uint8)
    restored = load_teacher("nlmeans")(noisy)
    assert filters.psnr(photo, restored) > filters.psnr(photo, noisy) + 2.0
    assert load_teacher("realrestorer.data.teacher:nlmeans") is nlmeans
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_teacher("no_such_module:fn")


def test_progressive_schedule_interpolates_and_holds():
    cfg = MixingConfig(schedule=[(0, 1.0), (100, 0.5)])
    assert [ratio_at(s, cfg) for s in (0, 50, 100, 500)] == [1.0, 0.75, 0.5, 0.5]
    assert ratio_at(10, MixingConfig(synthetic_ratio=0.3)) == 0.3
    with pytest.raises(ValueError, match="strictly increasing"):
        MixingConfig(schedule=[(10, 1.0), (5, 0.5)])
