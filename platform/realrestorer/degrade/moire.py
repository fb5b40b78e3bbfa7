"""Moiré: a photo of the image shown on an RGB-stripe display, taken through a Bayer sensor.

The display is a grid of pixels, each three vertical R, G, B sub-pixel stripes with a dark matrix between
rows. The camera sees that grid through a small perspective tilt and rotation, at a pitch different from
its own; each sensor pixel integrates the light over its area (and a little lens blur) through one colour
filter of an RGGB mosaic. The beat between the sub-pixel grid and the sensor's colour sampling lattice is
the moiré: coloured bands whose period and orientation follow the pitch ratio and the angles.

The displayed content stays registered to the original frame (as in paired screen-capture data sets,
which align the capture back to the source), so the image is pixel-aligned while the display grid
carries the geometry. Because the grid is periodic, the sensor's integration of it is a 1-D profile in
each grid direction, precomputed per image from its Fourier series; every pixel is then two table
look-ups at its warped grid phase rather than an upsampled render.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from realrestorer.degrade.lowlight import bayer_mosaic
from realrestorer.degrade.noise import TO_LINEAR, TO_SRGB, lookup

_PHASES = 256  # phase cells per display period (uint8 wrap-around gives the modulo for free)
_HARMONICS = 24

# Offsets of each RGGB site's sub-pixel stripe within a display pixel: red at 0, green 1/3, blue 2/3.
_SITE_CHANNEL = ((0, 1), (1, 2))


def sample(rgb: np.ndarray, rng: np.random.Generator, severity: float) -> dict:
    """Draw the display pitch, grid geometry and optics; moiré contrast rises with severity."""
    # Geometry is drawn before anything severity-dependent, so a seed keeps its pattern across severities.
    # Pitch (display pixel in sensor pixels) avoids ~1, where each sensor pixel averages about one period
    # and the grid mostly vanishes: finer screens (0.45-0.8, 30%) or close-ups (1.2-2.2).
    u = float(rng.random())
    pitch = 0.45 + 0.35 * (u / 0.3) if u < 0.3 else 1.2 + 1.0 * ((u - 0.3) / 0.7)
    return {
        "pitch": float(pitch),
        "rotation_deg": float(rng.uniform(-12.0, 12.0)),
        "tilt_x_deg": float(rng.uniform(-20.0, 20.0)),
        "tilt_y_deg": float(rng.uniform(-20.0, 20.0)),
        "phase": [float(v) for v in rng.random(2)],
        "stripe_fill": float(rng.uniform(0.2, 0.3)),  # sub-pixel width as a fraction of the pixel
        "row_fill": float(rng.uniform(0.7, 0.92)),  # lit fraction of each pixel row (dark matrix between)
        "sensor_fill": float(rng.uniform(0.55, 0.9)),  # light-gathering width of a sensor pixel (microlens)
        "lens_blur_px": float(rng.uniform(0.15, 0.45)),
        "sensor_blur_px": float(rng.uniform(0.3, 0.7)) if rng.random() < 0.5 else 0.0,
        # Contrast of the captured grid: defocus and screen diffusion weaken it, a sharp close capture
        # keeps all of it; above 1 the grid is captured sharper than the nominal optics.
        "strength": float((0.25 + 1.0 * severity) * rng.uniform(0.9, 1.1)),
    }


def render(rgb: np.ndarray, params: dict, **context) -> np.ndarray:
    """Photograph `rgb` off the simulated display (float32 H×W×3, aligned with the input)."""
    height, width = rgb.shape[:2]
    pitch = float(params["pitch"])
    if pitch <= 0:
        raise ValueError(f"moire pitch must be positive, got {pitch}")
    strength = np.float32(params["strength"])
    # Sensor footprint and lens blur measured in display pixels.
    footprint, blur = params["sensor_fill"] / pitch, params["lens_blur_px"] / pitch
    stripe = _integrated_profile(params["stripe_fill"], 1.0 / 6.0, footprint, blur)
    row = _integrated_profile(params["row_fill"], 0.5, footprint, blur)
    stripe = np.maximum(np.float32(1.0) + strength * (stripe - np.float32(1.0)), np.float32(0.0))
    row = np.maximum(np.float32(1.0) + strength * (row - np.float32(1.0)), np.float32(0.0))

    grid_x, grid_y = display_coordinates(height, width, params)
    # Each Bayer site sees only its own colour's stripes: shift the phase by that sub-pixel's offset.
    for dy in (0, 1):
        for dx in (0, 1):
            offset = _SITE_CHANNEL[dy][dx] / 3.0
            if offset:
                grid_x[dy::2, dx::2] -= np.float32(offset)
    mask = np.take(stripe, _phase_cells(grid_x)) * np.take(row, _phase_cells(grid_y))

    # Light reaching each sensor site: the displayed content (linear) times the grid's integrated coverage.
    raw = lookup(TO_LINEAR, bayer_mosaic(rgb)) * mask
    # Expose so the brightest sub-pixel just fits (no clipping), demosaic at 16 bits, undo the exposure.
    peak = float(stripe.max() * row.max())
    codes = cv2.multiply(raw, 65535.0 / peak, dtype=cv2.CV_16U)
    demosaiced = cv2.cvtColor(codes, cv2.COLOR_BayerRGGB2RGB).reshape(height, -1)  # 2-D: scalar hits every value
    out = np.take(TO_SRGB, cv2.multiply(demosaiced, peak, dtype=cv2.CV_16U)).reshape(height, width, 3)
    if params["sensor_blur_px"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), params["sensor_blur_px"], borderType=cv2.BORDER_REFLECT)
    return out


def display_coordinates(height: int, width: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Display-grid coordinates (in display pixels) seen by each sensor pixel centre (two float32 H×W maps).

    A homography about the image centre: a perspective tilt (focal length ~ the image's larger side),
    then rotation, then scaling by the pitch. It fixes the centre, so only the grid is warped.
    """
    focal = float(max(height, width))
    tilt_x = math.tan(math.radians(params["tilt_x_deg"])) / focal
    tilt_y = math.tan(math.radians(params["tilt_y_deg"])) / focal
    angle = math.radians(params["rotation_deg"])
    cos_a, sin_a = math.cos(angle) / params["pitch"], math.sin(angle) / params["pitch"]
    u = (np.arange(width, dtype=np.float32) - np.float32((width - 1) / 2))[None, :]
    v = (np.arange(height, dtype=np.float32) - np.float32((height - 1) / 2))[:, None]
    inv_w = np.float32(1.0) / (np.float32(tilt_x) * u + np.float32(tilt_y) * v + np.float32(1.0))
    phase_x, phase_y = params["phase"]
    grid_x = (np.float32(cos_a) * u + np.float32(sin_a) * v) * inv_w + np.float32(phase_x)
    grid_y = (np.float32(-sin_a) * u + np.float32(cos_a) * v) * inv_w + np.float32(phase_y)
    return grid_x, grid_y


def _phase_cells(coordinate: np.ndarray) -> np.ndarray:
    # Round to phase cells in int32, then wrap modulo 256 by the uint8 cast (negatives wrap correctly).
    return cv2.multiply(coordinate, float(_PHASES), dtype=cv2.CV_32S).astype(np.uint8)


def _integrated_profile(fill: float, centre: float, footprint: float, blur: float) -> np.ndarray:
    """One period of a lit band (`fill` wide at `centre`), box-integrated over `footprint` and Gaussian
    blurred by `blur` (all in display pixels), mean 1, sampled at `_PHASES` phases.

    Its Fourier series is the band's sinc coefficients times the box's sinc and the Gaussian's transfer.
    """
    n = np.arange(1, _HARMONICS + 1, dtype=np.float64)
    band = np.sinc(n * fill) * 2.0  # band of mean `fill`, normalised to mean 1
    transfer = np.sinc(n * footprint) * np.exp(-2.0 * (math.pi * n * blur) ** 2)
    phases = np.arange(_PHASES, dtype=np.float64) / _PHASES
    profile = 1.0 + np.cos(2.0 * math.pi * np.outer(phases - centre, n)) @ (band * transfer)
    return np.maximum(profile, 0.0).astype(np.float32)
