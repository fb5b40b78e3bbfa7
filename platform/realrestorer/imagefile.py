"""Reading and writing single image files for the command line, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 100_000_000  # a decoded image above this is refused (a decompression bomb or a mistake)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (or RGBA / gray as stored); ValueError with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"{path}: file is empty")
    from PIL import Image

    try:
        with Image.open(path) as probe:  # reads the header only
            width, height = probe.size
    except Exception:
        raise ValueError(f"{path}: not a readable image") from None
    if width * height > MAX_PIXELS:
        raise ValueError(f"{path}: {width}×{height} is larger than the {MAX_PIXELS:,}-pixel limit")
    # OpenCV would print its own warning for a truncated file; the ValueError below says it once.
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt or truncated?)")
    if image.dtype != np.uint8:
        image = (image.astype(np.float32) / np.iinfo(image.dtype).max * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 RGB/RGBA/gray to `path` (format from the suffix); ValueError when it cannot."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise ValueError(f"{path}: unknown image format {path.suffix!r}; use .png, .jpg, .webp, .bmp or .tif")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(path.suffix.lower(), image)
    if not ok:
        raise ValueError(f"{path}: could not encode the image")
    try:
        encoded.tofile(path)
    except OSError as err:
        raise ValueError(f"{path}: cannot write ({err.strerror})") from None
    return path
