"""Lens flare: a bright light source seen through a dirty lens.

The flare is the sum of four physical components, all added in linear light:

- a wave-optics point spread function, |FFT(pupil)|², of a dusty, scratched,
  slightly aberrated circular or polygonal aperture, summed over wavelengths;
- a veiling glare halo (scatter inside the lens) and a faint uniform veil;
- diffraction streaks through the source (aperture blade edges);
- ghosts: reflections between lens surfaces, seen as coloured discs and rings on
  the line through the image centre and the source.

All of it is drawn on a work grid of at most `_WORK_SIDE` pixels and upsampled:
the flare is smooth apart from the PSF core, which a bright source saturates anyway.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from realrestorer.degrade.color import linear_to_srgb, luminance, srgb_to_linear

_FFT = 128  # PSF grid; small because the PSF is resized to image scale
_PUPIL_R = 16.0  # pupil radius on the FFT grid at the reference wavelength
_CANVAS = 128  # the aperture is drawn once on this canvas...
_CANVAS_R = 56.0  # ...with this radius, then rescaled per wavelength
_REF_NM = 550.0
_WAVELENGTHS_NM = np.array([420.0, 470.0, 520.0, 570.0, 620.0, 670.0], dtype=np.float32)
_WORK_SIDE = 256  # the flare layer is computed at most this large, then upsampled


def _colour_weights() -> np.ndarray:
    # Rough Gaussian fits of the sRGB colour matching functions, normalised so a
    # flat spectrum sums to white.
    lam = _WAVELENGTHS_NM[:, None]
    centre = np.array([600.0, 540.0, 450.0], dtype=np.float32)
    width = np.array([45.0, 40.0, 30.0], dtype=np.float32)
    w = np.exp(-0.5 * ((lam - centre) / width) ** 2)
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


_RGB_PER_WAVELENGTH = _colour_weights()  # (num_wavelengths, 3)

# Fixed grids, computed once: polar coordinates on the aperture canvas, and the
# (-1)^(x+y) factor that moves the FFT's zero frequency to the grid centre.
_CANVAS_Y, _CANVAS_X = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32) - np.float32((_CANVAS - 1) / 2.0)
_CANVAS_RHO = np.hypot(_CANVAS_X, _CANVAS_Y)
_CANVAS_THETA = np.arctan2(_CANVAS_Y, _CANVAS_X)
_CHECKER = np.where(np.add.outer(np.arange(_FFT), np.arange(_FFT)) % 2 == 0, 1.0, -1.0).astype(np.float32)


def _bright_spot(rgb: np.ndarray) -> tuple[float, float, float]:
    """Pixel coordinates (x, y) and luminance of the brightest blurred spot."""
    h, w = rgb.shape[:2]
    scale = min(1.0, 64.0 / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lum = cv2.GaussianBlur(luminance(small), (0, 0), 1.5)
    iy, ix = np.unravel_index(int(np.argmax(lum)), lum.shape)
    x = (ix + 0.5) * w / lum.shape[1] - 0.5
    y = (iy + 0.5) * h / lum.shape[0] - 0.5
    return float(x), float(y), float(lum[iy, ix])


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict[str, Any]:
    h, w = rgb.shape[:2]
    spot_x, spot_y, spot_lum = _bright_spot(rgb)
    use_spot = bool(rng.random() < 0.8) and spot_lum > 0.6
    random_xy = rng.uniform(0.1, 0.9, size=2)
    source = [spot_x, spot_y] if use_spot else [float(random_xy[0] * (w - 1)), float(random_xy[1] * (h - 1))]
    num_streaks = int(rng.integers(2, 7))
    num_ghosts = int(rng.integers(3, 8))
    # Ghosts sit at p = c + k (s - c): k < 0 mirrors the source through the centre.
    ghost_k = rng.uniform(-1.4, 0.7, size=num_ghosts)
    ghost_colour = rng.uniform(0.2, 1.0, size=(num_ghosts, 3))
    return {
        "source": [float(source[0]), float(source[1])],
        "source_from_image": use_spot,
        "intensity": float((0.15 + 1.1 * severity) * rng.uniform(0.9, 1.1)),
        "tint": [1.0, float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.55, 1.0))],
        "seed": int(rng.integers(2**31)),
        "blades": int(rng.choice([0, 5, 6, 7, 8])),
        "blade_rotation": float(rng.uniform(0.0, np.pi)),
        "dust": float(rng.uniform(0.02, 0.12)),
        "scratches": int(rng.integers(0, 6)),
        "defocus": float(rng.uniform(-0.4, 0.4)),
        "astigmatism": float(rng.uniform(0.0, 0.3)),
        "psf_scale": float(rng.uniform(0.5, 1.0)),
        "core_power": float(rng.uniform(40.0, 120.0)),
        "glare": float(rng.uniform(0.4, 0.8)),
        "glare_radius": float(rng.uniform(0.02, 0.06)),
        "veil": float(rng.uniform(0.01, 0.03)),
        "streak_angles": [float(a) for a in rng.uniform(0.0, np.pi, size=num_streaks)],
        "streak_strength": [float(a) for a in rng.uniform(0.1, 0.4, size=num_streaks)],
        "streak_length": float(rng.uniform(0.1, 0.3)),
        "ghosts": [
            {
                "k": float(k),
                "radius": float(rng.uniform(0.015, 0.1)),
                "ring": bool(rng.random() < 0.35),
                "strength": float(rng.uniform(0.03, 0.12)),
                "colour": [float(c) for c in colour],
            }
            for k, colour in zip(ghost_k, ghost_colour)
        ],
    }


def _aperture(params: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Transmission mask and wavefront error (in waves at the reference wavelength) on the canvas."""
    c = (_CANVAS - 1) / 2.0
    r, theta = _CANVAS_RHO, _CANVAS_THETA
    blades = params["blades"]
    if blades == 0:
        edge = r
    else:
        # Distance to a regular polygon's edge, measured along the inscribed-circle normal.
        sector = 2.0 * np.pi / blades
        phi = np.mod(theta - params["blade_rotation"], sector) - sector / 2.0
        edge = r * np.cos(phi) / np.float32(np.cos(np.pi / blades))
    mask = np.clip(_CANVAS_R - edge + 0.5, 0.0, 1.0).astype(np.float32)

    # Dust: the brightest lumps of smooth noise become opaque specks.
    lumps = cv2.GaussianBlur(rng.standard_normal((_CANVAS, _CANVAS)).astype(np.float32), (0, 0), 2.0)
    # Blurred white noise is Gaussian: its upper `dust` tail starts at this many deviations.
    threshold = lumps.mean() + lumps.std() * np.float32(NormalDist().inv_cdf(1.0 - params["dust"]))
    specks = np.clip((lumps - threshold) / (0.25 * lumps.std() + 1e-6), 0.0, 1.0)
    mask *= 1.0 - 0.95 * specks

    num_scratches = params["scratches"]
    ends = rng.uniform(c - _CANVAS_R, c + _CANVAS_R, size=(max(num_scratches, 1), 2, 2))
    if num_scratches:
        scratches = np.zeros((_CANVAS, _CANVAS), np.float32)
        cv2.polylines(scratches, list(ends.astype(np.int32)), False, 1.0, 1, cv2.LINE_AA)
        mask *= 1.0 - 0.9 * scratches

    rho2 = (r / np.float32(_CANVAS_R)) ** 2
    smooth = cv2.resize(rng.standard_normal((5, 5)).astype(np.float32), (_CANVAS, _CANVAS), interpolation=cv2.INTER_CUBIC)
    wavefront = (
        params["defocus"] * (2.0 * rho2 - 1.0)
        + params["astigmatism"] * rho2 * np.cos(2.0 * (theta - params["blade_rotation"]))
        + 0.05 * smooth
    ).astype(np.float32)
    return mask, wavefront


def point_spread(params: dict[str, Any]) -> np.ndarray:
    """The RGB PSF on the `_FFT` grid, centred at index `_FFT // 2`, with peak luminance 1."""
    rng = np.random.default_rng(params["seed"])
    mask, wavefront = _aperture(params, rng)
    pupil = np.dstack([mask, wavefront])
    c_canvas = (_CANVAS - 1) / 2.0
    c_fft = _FFT // 2
    powers = []
    for lam in _WAVELENGTHS_NM:
        # Longer waves see a smaller pupil on the FFT grid, so their PSF is wider.
        s = _PUPIL_R * _REF_NM / float(lam) / _CANVAS_R
        m = np.array([[s, 0.0, c_fft - s * c_canvas], [0.0, s, c_fft - s * c_canvas]], np.float32)
        p = cv2.warpAffine(pupil, m, (_FFT, _FFT), flags=cv2.INTER_LINEAR, borderValue=0.0)
        phase = p[..., 1] * np.float32(2.0 * np.pi * _REF_NM / float(lam))
        re, im = cv2.polarToCart(p[..., 0] * _CHECKER, phase)
        spectrum = cv2.dft(cv2.merge([re, im]), flags=cv2.DFT_COMPLEX_OUTPUT)
        power = spectrum[..., 0] ** 2 + spectrum[..., 1] ** 2
        # Equal energy per wavelength: a flat (white) source spectrum.
        powers.append(power / float(power.sum()))
    psf = np.tensordot(np.stack(powers), _RGB_PER_WAVELENGTH, axes=(0, 0)).astype(np.float32)
    return psf / float(luminance(psf).max())


def _flare_layer(params: dict[str, Any], gh: int, gw: int, sx: float, sy: float) -> np.ndarray:
    """The flare in linear light on a gh×gw work grid, with the source at work pixel (sx, sy)."""
    cx, cy = (gw - 1) / 2.0, (gh - 1) / 2.0
    diag = float(np.hypot(gh, gw))
    # Everything but the PSF is smooth or at least a pixel wide: draw it on a half grid,
    # whose pixel centres are given here in work-grid coordinates.
    hh, hw = max(1, (gh + 1) // 2), max(1, (gw + 1) // 2)
    ys = (np.arange(hh, dtype=np.float32)[:, None] + 0.5) * np.float32(gh / hh) - 0.5
    xs = (np.arange(hw, dtype=np.float32)[None, :] + 0.5) * np.float32(gw / hw) - 0.5
    dx, dy = xs - np.float32(sx), ys - np.float32(sy)

    r0 = np.float32(params["glare_radius"] * diag)
    halo = 1.0 + (dx * dx + dy * dy) / (r0 * r0)
    scatter = params["glare"] / (halo * np.sqrt(np.sqrt(halo))) + params["veil"]  # ∝ r^-2.5 far out

    angles = np.asarray(params["streak_angles"], np.float32)[:, None, None]
    along = np.abs(np.cos(angles) * dx + np.sin(angles) * dy)
    across = np.sin(angles) * dx - np.cos(angles) * dy
    strength = np.asarray(params["streak_strength"], np.float32)[:, None, None]
    width = np.float32(max(0.7, 0.004 * diag))
    streaks = (strength * np.exp(-0.5 * (across / width) ** 2 - along / np.float32(params["streak_length"] * diag))).sum(axis=0)

    tint = np.asarray(params["tint"], np.float32)
    tint *= params["intensity"] / float(luminance(tint))
    smooth = (scatter + streaks)[..., None] * tint
    if params["ghosts"]:
        smooth += params["intensity"] * _ghosts(params["ghosts"], sx - cx, sy - cy, cx, cy, xs, ys, diag)
    layer = cv2.resize(smooth, (gw, gh), interpolation=cv2.INTER_LINEAR).reshape(gh, gw, 3)

    a = params["psf_scale"] * max(gh, gw) / _FFT
    m = np.array([[a, 0.0, sx - a * (_FFT // 2)], [0.0, a, sy - a * (_FFT // 2)]], np.float32)
    psf = cv2.warpAffine(point_spread(params), m, (gw, gh), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return cv2.scaleAdd(psf * tint, params["core_power"], layer)


def _ghosts(ghosts: list[dict], ox: float, oy: float, cx: float, cy: float, xs: np.ndarray, ys: np.ndarray, diag: float) -> np.ndarray:
    """Ghost discs and rings at p = c + k (s - c); (ox, oy) = s - c, all in work pixels."""
    k = np.array([g["k"] for g in ghosts], np.float32)[:, None, None]
    radius = np.array([g["radius"] for g in ghosts], np.float32)[:, None, None] * np.float32(diag)
    ring = np.array([g["ring"] for g in ghosts], bool)[:, None, None]
    d = np.hypot(xs - (cx + k * ox), ys - (cy + k * oy)) / radius
    disc = np.clip((1.0 - d) / 0.2, 0.0, 1.0)  # a soft-edged disc: the aperture's image
    annulus = np.exp(-(((d - 1.0) / 0.08) ** 2))
    profile = np.where(ring, annulus, disc)
    colour = np.array([np.asarray(g["colour"]) * g["strength"] for g in ghosts], np.float32)
    return np.tensordot(profile, colour, axes=(0, 0)).astype(np.float32)


def render(rgb: np.ndarray, params: dict[str, Any], **context: Any) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = min(1.0, _WORK_SIDE / max(h, w))
    gh, gw = max(1, round(h * scale)), max(1, round(w * scale))
    # Image pixel centres map to work pixel centres as cv2.resize does.
    sx = (params["source"][0] + 0.5) * gw / w - 0.5
    sy = (params["source"][1] + 0.5) * gh / h - 0.5
    layer = _flare_layer(params, gh, gw, sx, sy)
    if (gh, gw) != (h, w):
        layer = cv2.resize(layer, (w, h), interpolation=cv2.INTER_LINEAR)
    # A sensor saturates: linear light clips at 1 before the sRGB encoding.
    return linear_to_srgb(np.minimum(srgb_to_linear(rgb) + layer, 1.0))
