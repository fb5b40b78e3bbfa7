"""Reading and writing single image files for the command line, with one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 100_000_000  # a decoded image above this is refused (a decompression bomb or a mistake)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what write_image encodes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] as uint8, rounded (values outside are clipped)."""
    return (images * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


class ImageReadError(ValueError):
    """An image file that cannot be used; `reason` is a short name for counting skips ("corrupt", "too large")."""

    def __init__(self, path: Path, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.reason = reason


# EXIF orientation → the numpy steps that show the image upright (as viewers and PIL's exif_transpose do).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orientation(probe) -> int:
    """The EXIF orientation of an opened PIL image (1 when absent or unreadable), without decoding its pixels."""
    # A PNG's getexif decodes the whole image when no eXIf chunk came before the pixels; there is none to find then.
    if probe.format == "PNG" and "exif" not in probe.info:
        return 1
    try:
        return int(probe.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block leaves the pixels readable, just not turned
        return 1


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (or RGBA / gray as stored), upright by its EXIF orientation.

    ImageReadError (a ValueError) with the path and the reason otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "missing", "no such file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(path, "empty", "file is empty")
    from PIL import Image

    tiff = path.suffix.lower() in (".tif", ".tiff")
    width = height = None
    orientation = 1
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is the limit here; PIL's own bomb check would warn (or refuse) at a different size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as probe:  # reads the header only
                width, height = probe.size
                # OpenCV turns a TIFF upright itself, even unchanged; other formats it leaves as stored.
                orientation = 1 if probe.format == "TIFF" else _orientation(probe)
    except Image.DecompressionBombError:
        raise ImageReadError(path, "too large", f"larger than the {MAX_PIXELS:,}-pixel limit") from None
    except Exception:
        if not tiff:  # PIL cannot open float or signed RGB TIFFs, which OpenCV reads: the size is checked after
            raise ImageReadError(path, "not an image", "not a readable image") from None
    if width is not None and width * height > MAX_PIXELS:
        raise ImageReadError(path, "too large", f"{width}×{height} is larger than the {MAX_PIXELS:,}-pixel limit")
    # OpenCV would print its own warning for a truncated file; the error below says it once.
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if image is None:
        if width is None:
            raise ImageReadError(path, "not an image", "not a readable image")
        raise ImageReadError(path, "corrupt", "not a readable image (corrupt or truncated?)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageReadError(path, "too large", f"{image.shape[1]}×{image.shape[0]} is larger than the "
                                                 f"{MAX_PIXELS:,}-pixel limit")
    if image.dtype.kind == "f":  # float TIFF/EXR: values in [0, 1]
        image = to_uint8(np.nan_to_num(image))
    elif image.dtype.kind == "i":
        raise ImageReadError(path, "unsupported", f"signed {image.dtype} pixels are not supported (save as 8 or 16 bit)")
    elif image.dtype != np.uint8:
        image = (image.astype(np.float32) / np.iinfo(image.dtype).max * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if orientation in _UPRIGHT:
        image = np.ascontiguousarray(_UPRIGHT[orientation](image))
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write uint8 RGB/RGBA/gray to `path` (format from the suffix); ValueError when it cannot."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
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
