"""Blur's physical signature: high frequencies vanish, most along the PSF's long axis; light is conserved."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from realrestorer.degrade import apply, degrade
from realrestorer.degrade.blur import (
    KERNEL_KINDS,
    KINDS,
    _pieces,
    convolve,
    defocus_psf,
    gaussian_psf,
    low_pass_factor,
    motion_psf,
    psf,
)
from realrestorer.degrade.color import linear_to_srgb, luminance, srgb_to_linear

from tests.conftest import psnr


def _power_spectrum(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windowed luminance power spectrum with each bin's radial frequency (cycles/pixel) and angle."""
    y = luminance(image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0))
    h, w = y.shape
    y = (y - y.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(y)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    return power, np.hypot(fx, fy), np.arctan2(fy, fx)


def _high_frequency_energy(image: np.ndarray) -> float:
    power, radius, _ = _power_spectrum(image)
    return float(power[radius > 0.25].sum())  # above half-Nyquist


def _seed_for_each_kind(photo: np.ndarray) -> dict[str, int]:
    # The kind is the first draw, so a seed picks the same kind at every severity.
    seeds: dict[str, int] = {}
    for seed in range(100):
        _, params = degrade("blur", photo, np.random.default_rng(seed), 0.5)
        seeds.setdefault(params["kind"], seed)
    assert set(seeds) == set(KINDS)
    return seeds


def test_high_frequencies_drop_more_at_higher_severity(photo):
    clean = _high_frequency_energy(photo)
    for kind, seed in _seed_for_each_kind(photo).items():
        energies = [
            _high_frequency_energy(degrade("blur", photo, np.random.default_rng(seed), s)[0]) for s in (0.1, 0.9)
        ]
        assert energies[0] < 0.8 * clean, f"{kind}: high-frequency energy {energies[0]:.3g} vs clean {clean:.3g}"
        assert energies[1] < 0.5 * energies[0], (
            f"{kind}: severity 0.9 kept {energies[1]:.3g} vs {energies[0]:.3g} at 0.1"
        )


def _long_axis(kernel: np.ndarray) -> tuple[float, float]:
    """Angle (radians, image x/y axes) of the PSF's principal axis and its elongation (std ratio)."""
    ys, xs = np.indices(kernel.shape, dtype=np.float64)
    c = (kernel.shape[0] - 1) / 2.0
    dx, dy = xs - c, ys - c
    cov = np.array(
        [[(kernel * dx * dx).sum(), (kernel * dx * dy).sum()], [(kernel * dx * dy).sum(), (kernel * dy * dy).sum()]]
    )
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, 1]
    return float(np.arctan2(major[1], major[0])), float(np.sqrt(values[1] / max(values[0], 1e-12)))


def _wedge_attenuation(clean: np.ndarray, blurred: np.ndarray, angle: float) -> float:
    """Fraction of the clean image's mid/high-frequency energy kept within ±20° of a frequency direction."""
    power_clean, radius, theta = _power_spectrum(clean)
    power_blurred, _, _ = _power_spectrum(blurred)
    offset = np.abs((theta - angle + np.pi / 2) % np.pi - np.pi / 2)  # direction, not orientation
    band = (radius > 0.1) & (radius < 0.3) & (offset < np.deg2rad(20))
    return float(power_blurred[band].sum() / power_clean[band].sum())


@pytest.mark.parametrize("kind", ["motion", "gaussian"])
def test_energy_is_lost_along_the_psf_long_axis(kind, photo):
    # Float in, float out: 8-bit rounding would put a noise floor under both directions.
    photo = photo.astype(np.float32) / 255.0
    checked = 0
    for seed in range(60):
        out, params = degrade("blur", photo, np.random.default_rng(seed), 0.8)
        if params["kind"] != kind:
            continue
        axis, elongation = _long_axis(psf(params))
        if elongation < 2.0:
            continue
        along = _wedge_attenuation(photo, out, axis)
        across = _wedge_attenuation(photo, out, axis + np.pi / 2)
        assert along < 0.5 * across, f"seed {seed}: kept {along:.3g} along the PSF axis vs {across:.3g} across"
        checked += 1
    assert checked >= 3, f"only {checked} clearly elongated {kind} PSFs among the seeds"


def test_psfs_are_normalised_and_centred(photo):
    for seed in range(40):
        _, params = degrade("blur", photo, np.random.default_rng(seed), float(seed % 5) / 4)
        if params["kind"] not in KERNEL_KINDS:
            continue
        kernel = psf(params).astype(np.float64)
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert kernel.min() >= 0.0 and abs(kernel.sum() - 1.0) < 1e-5
        ys, xs = np.indices(kernel.shape)
        c = (kernel.shape[0] - 1) / 2.0
        assert abs((xs * kernel).sum() - c) < 1e-3 and abs((ys * kernel).sum() - c) < 1e-3, params


def test_psf_grows_with_severity_and_image_size():
    rng_seed = 11
    small = np.zeros((64, 64, 3), np.float32)
    large = np.zeros((512, 512, 3), np.float32)
    sizes = []
    for image, severity in ((small, 0.2), (small, 0.9), (large, 0.9)):
        seed = rng_seed
        while True:
            _, params = degrade("blur", image, np.random.default_rng(seed), severity)
            if params["kind"] == "defocus":
                break
            seed += 1
        sizes.append(params["radius"])
        rng_seed = seed + 1
    assert sizes[0] < sizes[1] < sizes[2]


def test_temporal_motion_averages_to_identity(photo):
    found = 0
    for seed in range(40):
        _, params = degrade("blur", photo, np.random.default_rng(seed), 0.9)
        if params["kind"] != "temporal":
            continue
        frames = np.array(params["frames"])
        assert 5 <= len(frames) <= 8
        assert np.abs(frames.mean(axis=0)).max() < 1e-9
        assert np.ptp(frames[:, 0]) + np.ptp(frames[:, 1]) > 1.0, "the camera must move between frames"
        found += 1
    assert found >= 3


def test_blur_conserves_light_in_linear_space():
    """Blur redistributes photons: the linear-light mean is kept (an sRGB-space blur would darken edges)."""
    rng = np.random.default_rng(0)
    checker = np.kron(rng.integers(0, 2, (12, 12)), np.ones((8, 8)))
    image = np.repeat(checker[:, :, None], 3, axis=2).astype(np.float32)
    mean_linear = float(srgb_to_linear(image).mean())
    for kind in KERNEL_KINDS:
        params = {
            "task": "blur",
            "severity": 0.5,
            "kind": kind,
            "seed": 3,
            "extent": 9.0,
            "curviness": 1.0,
            "radius": 4.0,
            "rim": 0.0,
            "cat_eye": 0.0,
            "cat_eye_angle": 0.0,
            "sigma_x": 3.0,
            "sigma_y": 2.0,
            "angle": 30.0,
        }
        out = apply("blur", image, params)
        assert abs(float(srgb_to_linear(out).mean()) - mean_linear) < 0.01, kind
        # In sRGB terms, edges come out brighter than the average of black and white.
        assert float(out.mean()) > float(image.mean()) + 0.05, kind


def test_sparse_convolution_equals_a_full_filter(photo):
    """The piecewise direct convolution of a large PSF is the same convolution as one full filter."""
    image = srgb_to_linear(photo.astype(np.float32) / 255.0)[:97, :131]  # odd, non-square
    for kernel in (motion_psf(5, 30.0, 2.0), gaussian_psf(7.0, 1.0, 30.0), defocus_psf(9.0, 1.0, 0.5, 40.0)):
        assert kernel.size > 129 and len(_pieces(kernel)) > 1  # really the piecewise path
        reference = cv2.filter2D(image, -1, cv2.flip(kernel, -1), borderType=cv2.BORDER_REFLECT_101)
        assert np.abs(convolve(image, kernel) - reference).max() < 1e-5


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "defocus", "radius": 6.5, "rim": 1.0, "cat_eye": 0.4, "cat_eye_angle": 30.0},
        {"kind": "gaussian", "sigma_x": 7.0, "sigma_y": 3.5, "angle": 25.0},
    ],
)
def test_reduced_resolution_matches_the_full_convolution(params, photo):
    """A PSF wide in every direction is applied at reduced resolution: same image, same place, same light."""
    assert low_pass_factor(params) >= 2
    image = photo.astype(np.float32) / 255.0
    linear = srgb_to_linear(image)
    exact = linear_to_srgb(convolve(linear, psf(params)))
    fast = apply("blur", image, {"task": "blur", **params})
    assert psnr(fast, exact) > 42.0
    a, b = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (exact, fast))
    (dx, dy), _ = cv2.phaseCorrelate(a, b, cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F))
    # A fifth of the contract's tolerance (phase correlation of two smooth images is good to ~0.1 px).
    assert abs(dx) < 0.2 and abs(dy) < 0.2, f"shift {(dx, dy)}"
    assert abs(float(srgb_to_linear(fast).mean()) - float(linear.mean())) < 2e-3
