"""Blur: camera shake, defocus, anisotropic Gaussian and temporal (burst/video-frame) averaging.

Blur integrates light, so every kind is applied in linear light and encoded back
to sRGB. The blur extent is relative to the image's short side (with a floor in
pixels, so tiny images still blur). Every point-spread function (PSF) is centred
on its kernel's centre and the temporal warps are centred on the identity, so
the output stays pixel-aligned with the clean image.

`psf(params)` rebuilds the kernel of the `motion`, `defocus` and `gaussian`
kinds; `gaussian_psf` and `convolve` are shared with the `web` model. Speed
comes from two exact-enough shortcuts: a sparse PSF runs as a few small direct
filters over its non-zero taps, and a PSF that is wide in every direction (a
large disk or Gaussian) is applied at reduced resolution, where it loses nothing.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, srgb_to_linear

KINDS = ("motion", "defocus", "gaussian", "temporal")
KERNEL_KINDS = ("motion", "defocus", "gaussian")


def blur_extent(short_side: int, severity: float) -> float:
    """Blur extent in pixels (the PSF's diameter or trajectory span) for an image's short side."""
    return max(1.5 + 2.0 * severity, short_side * (0.006 + 0.03 * severity))


# ---------------------------------------------------------------- kernels


def _shift_subpixel(kernel: np.ndarray, dx: float, dy: float) -> np.ndarray:
    # Linear interpolation is a 2-tap filter whose centroid is exactly the
    # fractional shift, so the kernel's centroid moves by exactly (dx, dy).
    ix, iy = math.floor(dx), math.floor(dy)
    fx, fy = dx - ix, dy - iy
    k = np.roll(kernel, (iy, ix), axis=(0, 1))
    k = (1.0 - fx) * k + fx * np.roll(k, 1, axis=1)
    return (1.0 - fy) * k + fy * np.roll(k, 1, axis=0)


def _centred(kernel: np.ndarray) -> np.ndarray:
    """Move the centroid onto the centre pixel (padding as needed) and normalise to unit sum (float32)."""
    k = kernel.astype(np.float64)
    ys, xs = np.indices(k.shape)
    total = k.sum()
    c = (k.shape[0] - 1) / 2.0
    dx, dy = c - (xs * k).sum() / total, c - (ys * k).sum() / total
    k = _shift_subpixel(np.pad(k, int(np.ceil(max(abs(dx), abs(dy)))) + 1), dx, dy)
    return (k / k.sum()).astype(np.float32)


def motion_psf(seed: int, extent: float, curviness: float, num_steps: int = 48) -> np.ndarray:
    """Camera-shake PSF: a random trajectory with a drifting heading and shaky speed, splatted sub-pixel."""
    rng = np.random.default_rng(seed)
    heading = rng.uniform(0.0, 2.0 * np.pi) + np.cumsum(rng.normal(0.0, curviness / np.sqrt(num_steps), num_steps))
    speed = np.clip(1.0 + 0.35 * rng.standard_normal(num_steps), 0.2, None)
    steps = speed * np.exp(1j * heading) + 0.15 * (rng.standard_normal(num_steps) + 1j * rng.standard_normal(num_steps))
    path = np.concatenate([[0.0], np.cumsum(steps)])
    # Resample densely in time (exposure is uniform in time, not arc length) so
    # that every pixel crossed gets its share of light.
    span = np.abs(path[:, None] - path[None, :]).max()
    path = path * (extent / max(span, 1e-9))
    num_samples = max(64, int(8 * extent))
    t = np.linspace(0.0, num_steps, num_samples)
    dense = np.interp(t, np.arange(num_steps + 1), path.real) + 1j * np.interp(t, np.arange(num_steps + 1), path.imag)
    dense -= dense.mean()  # bilinear splatting keeps this mean, so the PSF is centred
    half = int(np.ceil(np.abs(dense).max())) + 1
    size = 2 * half + 1
    x, y = dense.real + half, dense.imag + half
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    idx = np.concatenate([y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1])
    w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    kernel = np.bincount(idx, weights=w, minlength=size * size).reshape(size, size)
    return _centred(kernel)


def defocus_psf(radius: float, rim: float = 0.0, cat_eye: float = 0.0, cat_eye_angle: float = 0.0) -> np.ndarray:
    """Out-of-focus PSF: an anti-aliased disk, optionally with a bright rim and a cat-eye (vignetted) cut."""
    half = int(np.ceil(radius)) + 2
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.deg2rad(cat_eye_angle)
    ox, oy = cat_eye * radius * np.cos(theta), cat_eye * radius * np.sin(theta)
    # Centre the grid between the two pupils, where the cat-eye's centroid lies.
    xs, ys = xs + ox / 2.0, ys + oy / 2.0
    d = np.hypot(xs, ys)
    # Coverage of each pixel by the disk edge, to first order: a smooth, alias-free rim.
    kernel = np.clip(radius + 0.5 - d, 0.0, 1.0)
    # Spherical aberration piles light onto the edge of the bokeh disk.
    kernel *= 1.0 + rim * np.clip(d / radius, 0.0, 1.0) ** 4
    if cat_eye > 0.0:
        # Off-axis, the lens barrel clips the aperture: the PSF is the overlap of two disks.
        kernel *= np.clip(radius + 0.5 - np.hypot(xs - ox, ys - oy), 0.0, 1.0)
    return _centred(kernel)


def gaussian_psf(sigma_x: float, sigma_y: float, angle: float = 0.0) -> np.ndarray:
    """Anisotropic Gaussian PSF with standard deviations along its own axes, rotated by `angle` degrees.

    Truncated at three standard deviations along every direction (an ellipse, not
    a box), so an elongated PSF is a sparse kernel that `convolve` runs fast.
    """
    half = int(np.ceil(3.0 * max(sigma_x, sigma_y)))
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.deg2rad(angle)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = -xs * np.sin(theta) + ys * np.cos(theta)
    mahalanobis2 = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    kernel = np.where(mahalanobis2 <= 9.0, np.exp(-0.5 * mahalanobis2), 0.0)
    return (kernel / kernel.sum()).astype(np.float32)


def psf(params: dict[str, Any]) -> np.ndarray:
    """The PSF (odd square, unit sum, centred) of a `motion`, `defocus` or `gaussian` blur's params."""
    kind = params["kind"]
    if kind == "motion":
        return motion_psf(params["seed"], params["extent"], params["curviness"])
    if kind == "defocus":
        return defocus_psf(params["radius"], params["rim"], params["cat_eye"], params["cat_eye_angle"])
    if kind == "gaussian":
        return gaussian_psf(params["sigma_x"], params["sigma_y"], params["angle"])
    raise ValueError(f"blur kind {kind!r} has no single PSF; kernel kinds are: {', '.join(KERNEL_KINDS)}")


# OpenCV's filter2D switches to a DFT (cost independent of the kernel) at 130
# taps of kernel area; below that it visits only the non-zero taps. A larger
# PSF is cut into pieces under that area, so a sparse PSF (a shake trajectory,
# an elongated Gaussian) costs in proportion to its non-zero taps. Past about
# 300 taps the DFT is cheaper again (measured at 512² and 1024²).
_DIRECT_AREA = 129
_DFT_TAPS = 300


def _pieces(kernel: np.ndarray, y0: int = 0, x0: int = 0) -> list[tuple[int, int, np.ndarray]]:
    """Split a kernel into (row, column, piece) parts, each cropped to its non-zero box of area <= _DIRECT_AREA."""
    rows, cols = np.flatnonzero(kernel.any(axis=1)), np.flatnonzero(kernel.any(axis=0))
    if rows.size == 0:
        return []
    kernel = kernel[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    y0, x0 = y0 + int(rows[0]), x0 + int(cols[0])
    h, w = kernel.shape
    if h * w <= _DIRECT_AREA:
        return [(y0, x0, np.ascontiguousarray(kernel))]
    if h >= w:
        return _pieces(kernel[: h // 2], y0, x0) + _pieces(kernel[h // 2 :], y0 + h // 2, x0)
    return _pieces(kernel[:, : w // 2], y0, x0) + _pieces(kernel[:, w // 2 :], y0, x0 + w // 2)


def _scaled(params: dict[str, Any], scale: float) -> dict[str, Any]:
    """A PSF's params with every length multiplied by `scale` (angles and shape ratios kept)."""
    lengths = ("radius", "sigma_x", "sigma_y", "extent")
    return {key: value * scale if key in lengths else value for key, value in params.items()}


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with `kernel` (odd square), reflecting at the border; cost grows with its taps."""
    k = cv2.flip(kernel, -1)  # OpenCV correlates; a true convolution flips the kernel
    if k.size <= _DIRECT_AREA or np.count_nonzero(k) > _DFT_TAPS:
        return cv2.filter2D(image, -1, k, borderType=cv2.BORDER_REFLECT_101)
    h, w = image.shape[:2]
    half = k.shape[0] // 2
    pieces = _pieces(k)
    # Every piece reads a window of the same size, so one output buffer serves them all.
    margin = max(max(p.shape) for _, _, p in pieces)
    padded = cv2.copyMakeBorder(image, half, half + margin, half, half + margin, cv2.BORDER_REFLECT_101)
    window = np.empty((h + margin - 1, w + margin - 1) + image.shape[2:], np.float32)
    out = np.empty(image.shape, np.float32)
    for i, (y0, x0, piece) in enumerate(pieces):
        # Anchored at its top-left tap, the piece's first h×w outputs read only pixels inside the window.
        src = padded[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]]
        cv2.filter2D(src, -1, piece, dst=window, anchor=(0, 0), borderType=cv2.BORDER_REFLECT_101)
        if i == 0:
            np.copyto(out, window[:h, :w])
        else:
            out += window[:h, :w]
    return out


# Reduced-resolution convolution keeps at least this many low-resolution pixels
# of the PSF's narrowest scale: the disk's radius or the Gaussian's minor sigma.
# Above the reduced Nyquist frequency the PSF then passes under ~4 % of the
# signal (disk side lobes, Gaussian tail). On photos at 512² and 1024² the result
# is within 1-2 8-bit levels of the full-resolution convolution (PSNR > 45 dB).
MIN_SMALL_RADIUS = 3.0
MIN_SMALL_SIGMA = 0.8


def low_pass_factor(params: dict[str, Any]) -> int:
    """Integer downscale factor at which a `defocus` or `gaussian` PSF can be applied without visible loss (1: none)."""
    if params["kind"] == "defocus":
        return max(1, int(params["radius"] / MIN_SMALL_RADIUS))
    if params["kind"] == "gaussian":
        return max(1, int(min(params["sigma_x"], params["sigma_y"]) / MIN_SMALL_SIGMA))
    return 1


def convolve_low_pass(image: np.ndarray, small_kernel: np.ndarray, factor: int) -> np.ndarray:
    """Convolve at 1/`factor` resolution with `small_kernel` (the PSF scaled by 1/factor), back to the exact size.

    Valid for a PSF with (almost) no energy above the reduced Nyquist frequency.
    INTER_AREA then bicubic upsampling adds no second moment to the PSF (under
    0.015 f² px² for f <= 6, where bilinear would add f²/4), and with whole f×f
    blocks both resizes are centre-aligned, so nothing shifts.
    """
    h, w = image.shape[:2]
    # Reflect at full resolution (a low-resolution reflection would mirror about
    # the wrong line), with room for the PSF, and round up to whole blocks.
    margin = factor * (small_kernel.shape[0] // 2 + 2)
    padded = cv2.copyMakeBorder(
        image, margin, margin + (-h) % factor, margin, margin + (-w) % factor, cv2.BORDER_REFLECT_101
    )
    ph, pw = padded.shape[:2]
    small = cv2.resize(padded, (pw // factor, ph // factor), interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(convolve(small, small_kernel), (pw, ph), interpolation=cv2.INTER_CUBIC)
    return blurred[margin : margin + h, margin : margin + w]


# ---------------------------------------------------------------- temporal averaging


def _average_frames(linear: np.ndarray, frames: list[list[float]]) -> np.ndarray:
    """Mean of the image seen through each frame's small camera motion (dx, dy pixels, angle degrees)."""
    h, w = linear.shape[:2]
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    total = np.empty_like(linear)
    frame = np.empty_like(linear)
    for i, (dx, dy, angle) in enumerate(frames):
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        m[:, 2] += (dx, dy)
        warped = total if i == 0 else frame
        cv2.warpAffine(
            linear, m, (w, h), dst=warped, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        if i > 0:
            total += frame
    total *= np.float32(1.0 / len(frames))
    return total


def _camera_path(rng: np.random.Generator, extent: float, num_frames: int, half_diagonal: float) -> list[list[float]]:
    # A smooth (quadratic) path in translation and rotation, shifted so the mean
    # motion is zero: the average frame is then the identity and stays aligned.
    t = np.linspace(-0.5, 0.5, num_frames)
    velocity, accel = rng.normal(size=2) + 1j * rng.normal(size=2)
    path = velocity * t + accel * t**2
    rotation_share = float(rng.uniform(0.0, 0.4))
    path *= extent * (1.0 - rotation_share) / max(np.abs(path[:, None] - path[None, :]).max(), 1e-9)
    path -= path.mean()
    spin = np.polyval([rng.normal(), rng.normal(), 0.0], t)
    # Rotation sized so that the corners move by the rotation's share of the extent.
    spin *= np.rad2deg(extent * rotation_share / half_diagonal) / max(np.ptp(spin), 1e-9)
    spin -= spin.mean()
    return [[float(p.real), float(p.imag), float(a)] for p, a in zip(path, spin)]


# ---------------------------------------------------------------- model


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    h, w = rgb.shape[:2]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    extent = blur_extent(min(h, w), severity) * float(rng.uniform(0.9, 1.1))
    if kind == "motion":
        return {
            "kind": kind,
            "seed": int(rng.integers(2**31)),
            "extent": extent,
            "curviness": float(rng.uniform(0.2, 2.5)),
        }
    if kind == "defocus":
        bokeh = rng.uniform(size=4)
        return {
            "kind": kind,
            "radius": 0.4 * extent,
            "rim": float(bokeh[0] * 1.5) if bokeh[1] < 0.5 else 0.0,
            "cat_eye": float(0.2 + 0.6 * bokeh[2]) if bokeh[3] < 0.3 else 0.0,
            "cat_eye_angle": float(rng.uniform(0.0, 360.0)),
        }
    if kind == "gaussian":
        return {
            "kind": kind,
            "sigma_x": max(0.3, 0.3 * extent),
            "sigma_y": max(0.3, 0.3 * extent * float(rng.uniform(0.2, 1.0))),
            "angle": float(rng.uniform(0.0, 180.0)),
        }
    num_frames = 5 + int(rng.integers(4))
    return {"kind": kind, "frames": _camera_path(rng, extent, num_frames, 0.5 * math.hypot(h, w))}


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    kind = params["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown blur kind {kind!r}; choose one of: {', '.join(KINDS)}")
    linear = srgb_to_linear(rgb)
    if kind == "temporal":
        blurred = _average_frames(linear, params["frames"])
    else:
        factor = low_pass_factor(params)
        if factor > 1:
            blurred = convolve_low_pass(linear, psf(_scaled(params, 1.0 / factor)), factor)
        else:
            blurred = convolve(linear, psf(params))
    return linear_to_srgb(blurred)


__all__ = ["render", "sample"]
