"""Depth providers for haze: the weight-free prior and a TorchScript network from a path."""

from __future__ import annotations

import numpy as np
import pytest

from realrestorer.degrade import apply, degrade
from realrestorer.degrade.depth import PriorDepth, TorchScriptDepth, normalise, provider, resolve


def test_prior_is_relative_depth_with_the_image_size(photo):
    rgb = photo.astype(np.float32) / 255.0
    for shape in ((256, 256), (37, 61), (20, 300), (1, 5)):
        img = np.ascontiguousarray(np.resize(rgb, (*shape, 3)))
        depth = PriorDepth().depth(img)
        assert depth.shape == shape and depth.dtype == np.float32
        assert depth.min() >= 0.0 and depth.max() <= 1.0


def test_prior_puts_the_top_and_bright_dark_channel_far():
    # A flat grey scene: only the vertical prior speaks, so the top is farther.
    flat = np.full((96, 96, 3), 0.4, np.float32)
    depth = PriorDepth().depth(flat)
    assert depth[:20].mean() > depth[-20:].mean() + 0.5

    # Left half saturated colour (dark channel 0), right half whitish (bright dark channel):
    # at the same height the whitish side, like distant haze or sky, is farther.
    scene = np.zeros((96, 96, 3), np.float32)
    scene[:, :48] = (0.8, 0.1, 0.1)
    scene[:, 48:] = (0.75, 0.75, 0.8)
    depth = PriorDepth().depth(scene)
    assert depth[:, 56:].mean() > depth[:, :40].mean() + 0.2


def test_prior_depth_edges_follow_image_edges():
    # The guided filter keeps the depth step at the image edge instead of smearing it.
    scene = np.zeros((128, 128, 3), np.float32)
    scene[:, :64] = (0.8, 0.1, 0.1)
    scene[:, 64:] = (0.75, 0.75, 0.8)
    depth = PriorDepth().depth(scene)
    step_at_edge = depth[:, 67].mean() - depth[:, 60].mean()
    step_inside = depth[:, 120].mean() - depth[:, 80].mean()
    assert step_at_edge > 0.15 and abs(step_inside) < step_at_edge / 2


def test_resolve_accepts_arrays_and_providers(photo):
    rgb = photo.astype(np.float32) / 255.0
    ramp = np.tile(np.linspace(5.0, 9.0, 256, dtype=np.float32), (256, 1))
    depth, name = resolve(ramp, rgb)
    assert name == "external" and np.allclose(depth, normalise(ramp)) and depth.max() == 1.0

    class Columns:
        name = "columns"

        def __call__(self, image):
            return np.tile(np.arange(image.shape[1], dtype=np.float32), (image.shape[0], 1))

    depth, name = resolve(Columns(), rgb)
    assert name == "columns" and depth[0, 0] == 0.0 and depth[0, -1] == 1.0
    with pytest.raises(ValueError, match="shape"):
        resolve(np.zeros((10, 10), np.float32), rgb)
    with pytest.raises(ValueError, match="provider"):
        resolve("far", rgb)


def _save_green_disparity_net(path, squeeze_channel: bool) -> None:
    """A tiny real TorchScript network: disparity = 2·green + 1 (1×1×H×W or 1×H×W)."""
    import torch

    class GreenDisparity(torch.nn.Module):
        def __init__(self, squeeze: bool):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor([0.0, 2.0, 0.0]).view(1, 3, 1, 1))
                self.conv.bias.fill_(1.0)
            self.squeeze = squeeze

        def forward(self, x):
            y = self.conv(x)
            return y[:, 0] if self.squeeze else y

    torch.jit.script(GreenDisparity(squeeze_channel)).save(str(path))


@pytest.mark.parametrize("squeeze_channel", [False, True])
def test_torchscript_depth_loads_once_from_a_path(tmp_path, photo, squeeze_channel):
    path = tmp_path / "depth.pt"
    _save_green_disparity_net(path, squeeze_channel)
    disparity_net = provider(str(path))
    depth_net = provider(str(path), inverse=False)
    assert isinstance(disparity_net, TorchScriptDepth)
    path.unlink()  # the model lives in the provider; the file is no longer needed

    rgb = photo.astype(np.float32) / 255.0
    # Disparity is inverse depth: the greenest pixels are the nearest.
    assert np.allclose(disparity_net(rgb), 1.0 - normalise(rgb[:, :, 1]), atol=1e-5)
    assert np.allclose(depth_net(rgb), normalise(rgb[:, :, 1]), atol=1e-5)


def test_torchscript_depth_resizes_to_its_input_size(tmp_path, photo):
    path = tmp_path / "depth.pt"
    _save_green_disparity_net(path, squeeze_channel=False)
    rgb = np.ascontiguousarray(photo[:100, :150].astype(np.float32) / 255.0)
    depth = TorchScriptDepth(str(path), input_size=64)(rgb)
    assert depth.shape == (100, 150)
    assert np.corrcoef(depth.ravel(), 1.0 - rgb[:, :, 1].ravel())[0, 1] > 0.8


def test_missing_depth_model_names_the_path_and_config_key(tmp_path):
    missing = tmp_path / "nowhere" / "depth.pt"
    with pytest.raises(ValueError, match=r"nowhere/depth\.pt.*degrade\.haze_depth"):
        provider(str(missing))


def test_haze_records_the_provider_it_used(tmp_path, photo):
    path = tmp_path / "depth.pt"
    _save_green_disparity_net(path, squeeze_channel=False)
    net = provider(str(path))
    _, params = degrade("haze", photo, np.random.default_rng(0), 0.5)
    assert params["depth"] == "prior"
    out, params = degrade("haze", photo, np.random.default_rng(0), 0.5, depth=net)
    assert params["depth"] == "external"
    with pytest.raises(ValueError, match="depth provider 'external'"):
        apply("haze", photo, params)
    assert np.array_equal(apply("haze", photo, params, depth=net), out)
