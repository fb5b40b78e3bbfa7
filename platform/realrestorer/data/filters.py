"""Pair filters: pure scoring functions, and thin classes for the pyiqa quality metrics.

Scores are always recorded; the decision to keep a pair compares them with
config thresholds (`data.filters`). Images are H×W×3 uint8 RGB.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import cv2
import numpy as np

from realrestorer.data.config import FilterConfig
from realrestorer.degrade import apply

log = logging.getLogger(__name__)

def gray(rgb: np.ndarray) -> np.ndarray:
    """float32 luma in [0, 1]."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def psnr(clean: np.ndarray, degraded: np.ndarray) -> float:
    """PSNR in dB of two uint8 images; inf when they are identical."""
    diff = clean.astype(np.float32) - degraded.astype(np.float32)
    mse = float(np.mean(diff * diff, dtype=np.float64))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))


def gradient_magnitude(luma: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def gradient_ssim(clean: np.ndarray, degraded: np.ndarray, sigma: float = 1.5) -> float:
    """Contrast-structure term of SSIM between the gradient-magnitude maps, each scaled to unit mean.

    Scaling by the mean makes exposure and contrast changes (lowlight, haze) count
    as preserved structure; an image whose edges are gone or replaced scores near 0.
    Windows are weighted by the clean image's gradient activity.
    """
    maps = []
    for image in (clean, degraded):
        grad = gradient_magnitude(gray(image))
        maps.append(grad / np.float32(grad.mean(dtype=np.float64) + 1e-6))
    a, b = maps
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), sigma)
    mu_a, mu_b = blur(a), blur(b)
    var_a = np.maximum(blur(a * a) - mu_a * mu_a, 0.0)
    var_b = np.maximum(blur(b * b) - mu_b * mu_b, 0.0)
    cov = blur(a * b) - mu_a * mu_b
    c = 1e-3  # unit-mean maps: the constant only guards the division
    # SSIM's contrast-structure term: also falls when the degraded gradients vanish (a flat image).
    structure = (2.0 * cov + c) / (var_a + var_b + c)
    # Flat windows of the clean image carry no structure to lose: weight by its local activity.
    weight = np.sqrt(var_a)
    # float64 sums: float32 ones vary in the last bits with memory alignment, and shards must be bit-stable.
    return float(np.sum(structure * weight, dtype=np.float64) / (np.sum(weight, dtype=np.float64) + 1e-12))


def alignment_shift(clean: np.ndarray, degraded: np.ndarray, max_side: int = 256) -> tuple[float, float]:
    """(translation in full-resolution pixels, peak response) between the two images, by phase correlation.

    The pair is downscaled so its longest side is at most `max_side` (speed, and
    robustness to noise); the shift found is scaled back up. Phase correlation
    whitens the cross-power spectrum, so global gain and offset (lowlight, haze)
    do not move the peak; on these same pairs, correlating gradient maps was
    measured to be noisier, so photometric tasks are compared on gradients by
    `gradient_ssim` instead. A low response (below ~0.3) means no common
    structure was found, and the shift is then meaningless.
    """
    a, b = gray(clean), gray(degraded)
    scale = min(1.0, max_side / max(a.shape))
    if scale < 1.0:
        size = (max(8, round(a.shape[1] * scale)), max(8, round(a.shape[0] * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a - np.float32(a.mean(dtype=np.float64)), b - np.float32(b.mean(dtype=np.float64)), window)
    return float(np.hypot(dx, dy) / scale), float(response)


def _blur_steps(params: dict[str, Any]) -> list[dict[str, Any]]:
    # A blur sample, a mixed chain's blur step, or one inside a proxy's chain of [mixed, web].
    if params.get("task") == "blur":
        return [params]
    nested = [*params.get("steps", []), *params.get("chain", [])]
    return [step for item in nested if isinstance(item, dict) for step in _blur_steps(item)]


def alignment_reference(clean: np.ndarray, params: dict[str, Any] | None) -> np.ndarray:
    """What the degraded image is aligned against: `clean`, blurred first with any blur the params record.

    Phase correlation whitens the spectrum, so it follows the phase of a blur's
    transfer function, not the centroid of its PSF: an asymmetric PSF (a curved
    shake trajectory, a cat-eye disk, a rotating frame average), though centred
    by construction, reads as a shift of up to 2-3 px at 256² and more at 512².
    The same blur applied to the clean image carries the same phase, so the shift
    left is the pair's true misalignment (any other step, or a moved image). The
    centring of the blur itself is the blur model's contract, tested there.
    """
    steps = _blur_steps(params) if params else []
    for step in steps:
        clean = apply("blur", clean, step)
    return clean


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash: signs of the 8×8 lowest frequencies of a 32×32 luma against their median."""
    small = cv2.resize(gray(rgb), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term carries brightness only
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between 64-bit hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.unpackbits(np.ascontiguousarray(x[..., None]).view(np.uint8), axis=-1).sum(axis=-1)


def near_duplicates(hashes: list[int], max_distance: int) -> np.ndarray:
    """Boolean mask: True for each hash within `max_distance` bits of an earlier one (which is kept)."""
    codes = np.asarray(hashes, dtype=np.uint64)
    n = len(codes)
    duplicate = np.zeros(n, dtype=bool)
    # Blocked all-pairs comparison: memory stays at block × n while every pair is checked.
    block = 1024
    for start in range(0, n, block):
        dist = hamming(codes[start:start + block, None], codes[None, :])
        idx = np.arange(start, min(start + block, n))
        earlier = np.arange(n)[None, :] < idx[:, None]
        duplicate[idx] = np.any((dist <= max_distance) & earlier, axis=1)
    return duplicate


def pair_scores(clean: np.ndarray, degraded: np.ndarray, cfg: FilterConfig,
                params: dict[str, Any] | None = None) -> dict[str, float]:
    """Strength, destruction and alignment scores of a pair; `params` (the recorded degradation) refines alignment.

    With params that record a blur, `shift_px` is measured against `alignment_reference`.
    """
    shift, response = alignment_shift(alignment_reference(clean, params), degraded, cfg.align_side)
    scores = {
        "psnr": psnr(clean, degraded),
        "gradient_ssim": gradient_ssim(clean, degraded),
        "shift_px": shift,
        "align_response": response,
    }
    # OpenCV's SIMD paths differ in the last float32 bits with buffer alignment; rounding keeps shards bit-stable.
    return {name: round(value, 5) for name, value in scores.items()}


def pair_rejection(scores: dict[str, float], task: str, cfg: FilterConfig) -> str | None:
    """The reason a scored pair is rejected, or None to keep it."""
    if scores["psnr"] >= cfg.psnr_max.get(task, cfg.psnr_max_default):
        return "too_weak"
    # Misalignment first: a shifted pair also loses gradient structure, but a shift is the cause.
    if scores["align_response"] >= cfg.min_align_response and scores["shift_px"] > cfg.max_shift_px:
        return "misaligned"
    if scores["gradient_ssim"] < cfg.gradient_ssim_min:
        return "destroyed"
    return None


def _weights_file(metric: str, weights_dir: str | None) -> str | None:
    if weights_dir is None:
        return None
    found = sorted(glob.glob(os.path.join(weights_dir, f"{metric}*")))
    return found[0] if found else None


class QualityScorer:
    """pyiqa no-reference metrics on clean crops; loads once (use it inside an actor).

    PIQE is pure computation. Other metrics need weights from `quality_weights_dir`;
    a metric that cannot be built is listed in `unavailable` with the reason.
    """

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.metrics: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        if not cfg.quality_metrics:
            return
        import pyiqa
        import torch

        torch.set_num_threads(1)  # one actor per core: intra-op threads would oversubscribe
        for name in cfg.quality_metrics:
            weights = _weights_file(name, cfg.quality_weights_dir)
            if name != "piqe" and weights is None:
                self.unavailable[name] = f"no weights named {name}* in data.filters.quality_weights_dir={cfg.quality_weights_dir!r}"
                continue
            try:
                kwargs = {"pretrained_model_path": weights} if weights else {}
                self.metrics[name] = pyiqa.create_metric(name, device="cpu", as_loss=False, **kwargs)
            except Exception as err:  # noqa: BLE001  pyiqa raises many types (URLError, hub errors) for missing parts
                self.unavailable[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        for name, reason in self.unavailable.items():
            log.warning("quality metric %s unavailable: %s", name, reason)

    def __call__(self, rgb: np.ndarray) -> dict[str, float]:
        if not self.metrics:
            return {}
        import torch

        tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0  # a writable copy
        with torch.inference_mode():
            return {name: float(metric(tensor).item()) for name, metric in self.metrics.items()}

    def rejection(self, scores: dict[str, float]) -> str | None:
        if self.cfg.piqe_max is not None and scores.get("piqe", 0.0) > self.cfg.piqe_max:
            return "low_quality"
        return None


__all__ = [
    "QualityScorer",
    "alignment_reference",
    "alignment_shift",
    "gradient_ssim",
    "hamming",
    "near_duplicates",
    "pair_rejection",
    "pair_scores",
    "phash",
    "psnr",
]
