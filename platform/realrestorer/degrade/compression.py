"""Compression: JPEG with chroma subsampling, WebP, down/up resize chains and generation loss.

Real codecs do the work (OpenCV's libjpeg-turbo and libwebp), on 8-bit data as
they would be in the wild. Codecs never move pixels and the resize chain comes
back to the exact original size with OpenCV's centre-aligned sampling, so the
output stays pixel-aligned with the clean image.

`roundtrip` (encode + decode of a float image) is shared with the `web` model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

KINDS = ("jpeg", "webp", "resize", "generations")
# WebP encodes ~10x slower than JPEG and is rarer in the wild, so it is drawn least.
KIND_WEIGHTS = (0.35, 0.15, 0.25, 0.25)

CODECS = ("jpeg", "webp")

# libjpeg sampling factors: 4:2:0 halves chroma both ways, 4:2:2 horizontally, 4:4:4 keeps it.
SUBSAMPLING = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}

INTERPOLATIONS = {
    # Plain INTER_NEAREST samples at floor(x / scale), a half-pixel shift; the exact variant is centre-aligned.
    "nearest": cv2.INTER_NEAREST_EXACT,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
DOWNSCALERS = ("area", "linear", "cubic", "nearest")
UPSCALERS = ("linear", "cubic", "lanczos", "nearest")


def codec_quality(severity: float, jitter: float) -> int:
    """Encoder quality for a severity: 60 at severity 0 down to 5 at 1 (plus a few steps of `jitter`)."""
    return int(np.clip(round(60.0 - 55.0 * severity + jitter), 3, 95))


def encode_u8(bgr: np.ndarray, codec: str, quality: int, subsampling: str = "420") -> np.ndarray:
    """Encode and decode an 8-bit BGR image with a lossy codec (as it would be stored and read back)."""
    if codec == "jpeg":
        if subsampling not in SUBSAMPLING:
            raise ValueError(f"unknown chroma subsampling {subsampling!r}; choose one of: {', '.join(SUBSAMPLING)}")
        flags = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SUBSAMPLING[subsampling]]
        ok, data = cv2.imencode(".jpg", bgr, flags)
    elif codec == "webp":
        ok, data = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {bgr.shape} image as {codec}")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def to_bgr_u8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to 8-bit BGR, rounded and saturated."""
    return cv2.cvtColor(cv2.convertScaleAbs(rgb, alpha=255.0), cv2.COLOR_RGB2BGR)


def from_bgr_u8(bgr: np.ndarray) -> np.ndarray:
    """8-bit BGR to float32 RGB in [0, 1]."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    rgb *= np.float32(1.0 / 255.0)  # in place: a fresh image-sized buffer costs page faults
    return rgb


def roundtrip(rgb: np.ndarray, codec: str, quality: int, subsampling: str = "420") -> np.ndarray:
    """Encode float RGB with a lossy codec and decode it back (float32 RGB)."""
    return from_bgr_u8(encode_u8(to_bgr_u8(rgb), codec, quality, subsampling))


def resize_roundtrip(
    image: np.ndarray, scale: float, down: str, up: str, at_small: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Downscale by `scale` (< 1) with `down` interpolation, optionally process, then back to the exact size with `up`."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=INTERPOLATIONS[down])
    if at_small is not None:
        small = at_small(small)
    return cv2.resize(small, (w, h), interpolation=INTERPOLATIONS[up])


def _subsampling(rng: np.random.Generator) -> str:
    # 4:2:0 is what cameras, phones and most web encoders write.
    return ("420", "422", "444")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    jitter = float(rng.uniform(-4.0, 4.0))
    if kind == "jpeg":
        return {"kind": kind, "quality": codec_quality(severity, jitter), "subsampling": _subsampling(rng)}
    if kind == "webp":
        return {"kind": kind, "quality": codec_quality(severity, jitter)}
    if kind == "resize":
        # A thumbnail stored as JPEG and blown back up: soft, with enlarged blocks.
        return {
            "kind": kind,
            "scale": float(1.0 / (1.4 + 2.6 * severity) * rng.uniform(0.93, 1.07)),
            "down": DOWNSCALERS[int(rng.integers(len(DOWNSCALERS)))],
            "up": UPSCALERS[int(rng.integers(len(UPSCALERS)))],
            "quality": codec_quality(severity, jitter + 30.0),
            "subsampling": _subsampling(rng),
        }
    # Generation loss: saved again and again by different tools at different settings.
    num_passes = 2 + int(rng.integers(4))
    offsets = rng.uniform(-6.0, 14.0, num_passes)
    passes = [
        {"quality": codec_quality(severity, jitter + float(o)), "subsampling": _subsampling(rng)} for o in offsets
    ]
    return {"kind": kind, "passes": passes}


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    kind = params["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown compression kind {kind!r}; choose one of: {', '.join(KINDS)}")
    bgr = to_bgr_u8(rgb)
    if kind == "jpeg":
        bgr = encode_u8(bgr, "jpeg", params["quality"], params["subsampling"])
    elif kind == "webp":
        bgr = encode_u8(bgr, "webp", params["quality"])
    elif kind == "resize":

        def thumbnail_jpeg(small: np.ndarray) -> np.ndarray:
            return encode_u8(small, "jpeg", params["quality"], params["subsampling"])

        bgr = resize_roundtrip(bgr, params["scale"], params["down"], params["up"], thumbnail_jpeg)
    else:
        for step in params["passes"]:
            bgr = encode_u8(bgr, "jpeg", step["quality"], step["subsampling"])
    return from_bgr_u8(bgr)


__all__ = ["render", "sample"]
