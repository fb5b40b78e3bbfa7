"""Reading image files for the command line: upright by EXIF, any bit depth to uint8, a reason for each refusal."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from realrestorer.imagefile import MAX_PIXELS, ImageReadError, read_image


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff", ".webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_show_the_photo(orientation, suffix, tmp_path):
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:8, :6] = (250, 20, 20)  # a red corner block and a green edge: every turn and flip moves them
    pixels[-4:, 10:] = (20, 250, 20)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo{suffix}"
    image.save(path, exif=exif.tobytes(), **({"quality": 95} if suffix in (".jpg", ".webp") else {}))
    with Image.open(path) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB")).astype(int)
    got = read_image(path)
    assert got.shape == ((20, 30, 3) if orientation < 5 else (30, 20, 3))
    assert np.abs(got.astype(int) - upright).max() < 40  # lossy formats blur the block edges a little


def test_other_bit_depths_become_uint8(tmp_path):
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 4, 3), 65535 // 2, np.uint16))
    cv2.imwrite(str(tmp_path / "float.tiff"), np.full((4, 4), 0.25, np.float32))
    colour = np.dstack([np.full((4, 4), v, np.float32) for v in (0.0, 0.5, 1.5)])  # BGR as OpenCV writes it
    cv2.imwrite(str(tmp_path / "float_rgb.tiff"), colour)
    assert read_image(tmp_path / "deep.png").dtype == np.uint8 and int(read_image(tmp_path / "deep.png")[0, 0, 0]) == 127
    assert int(read_image(tmp_path / "float.tiff")[0, 0]) == 64
    assert read_image(tmp_path / "float_rgb.tiff")[0, 0].tolist() == [255, 128, 0]  # RGB, clipped to [0, 1]


def test_each_refusal_names_the_file_and_a_reason(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "whole.png"), (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # the header is intact, the pixels are not
    cv2.imwrite(str(tmp_path / "signed.tiff"), np.full((4, 4), -5, np.int16))
    cv2.imwrite(str(tmp_path / "signed_rgb.tiff"), np.full((4, 4, 3), -5, np.int16))
    side = int(MAX_PIXELS**0.5) + 1  # a header that claims more pixels than the limit; PIL's own limit not in the way
    Image.new("1", (side, side)).save(tmp_path / "huge.png")
    expected = {"missing.png": "missing", "empty.png": "empty", "notes.png": "not an image", "cut.png": "corrupt",
                "signed.tiff": "unsupported", "signed_rgb.tiff": "unsupported", "huge.png": "too large"}
    for name, reason in expected.items():
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name)
        assert err.value.reason == reason and str(err.value).startswith(f"{tmp_path / name}: ")
