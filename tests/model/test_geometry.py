"""Token packing, position ids, resizing and the flow maths."""

from __future__ import annotations

import pytest
import torch

from realrestorer.model import flow
from realrestorer.model.sizing import buckets, fit_size, resize
from realrestorer.model.transformer import image_ids, pack, unpack


def test_pack_unpack_round_trip_keeps_2x2_cells_together():
    lat = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    tokens = pack(lat)
    assert tokens.shape == (2, 12, 12)
    # Token 0 holds exactly the top-left 2×2 cell of every channel.
    assert torch.equal(tokens[0, 0].view(3, 2, 2), lat[0, :, :2, :2])
    assert torch.equal(unpack(tokens, 6, 8), lat)


def test_reference_ids_share_rows_and_columns_on_image_index_one():
    target, ref = image_ids(3, 4, 0), image_ids(3, 4, 1)
    assert target.shape == (12, 3)
    assert torch.equal(target[:, 1:], ref[:, 1:])
    assert set(target[:, 0].tolist()) == {0.0} and set(ref[:, 0].tolist()) == {1.0}
    assert target[5].tolist() == [0.0, 1.0, 1.0]  # row-major, like the packed tokens


@pytest.mark.parametrize("h,w", [(64, 64), (480, 640), (1000, 250), (17, 3)])
def test_fit_size_keeps_area_and_aspect_on_the_grid(h, w):
    fh, fw = fit_size(h, w, 64, 4)
    assert fh % 4 == 0 and fw % 4 == 0
    if min(h, w) * 64 / (h * w) ** 0.5 >= 8:
        assert abs(fh * fw - 64 * 64) / (64 * 64) < 0.15
        assert abs((fh / fw) / (h / w) - 1) < 0.15


def test_fit_size_rejects_empty_images():
    with pytest.raises(ValueError, match="empty"):
        fit_size(0, 5, 64, 4)


def test_resize_is_identity_at_the_same_size_and_buckets_group_sizes():
    x = torch.rand(1, 3, 8, 8)
    assert resize(x, (8, 8)) is x
    assert resize(x, (4, 12)).shape == (1, 3, 4, 12)
    assert buckets([(4, 4), (8, 4), (4, 4)]) == {(4, 4): [0, 2], (8, 4): [1]}


def test_schedule_runs_from_one_to_zero_and_shift_pushes_towards_noise():
    s = flow.schedule(28, 3.0)
    assert len(s) == 29 and s[0] == 1.0 and s[-1] == 0.0
    assert bool((s[1:] < s[:-1]).all())
    assert bool((flow.schedule(28, 3.0)[1:-1] > flow.schedule(28, 1.0)[1:-1]).all())


def test_training_sigmas_are_in_the_open_interval_and_shifted_up():
    g = torch.Generator().manual_seed(0)
    plain = flow.sample_sigmas(4000, 1.0, 0.0, 1.0, g)
    shifted = flow.sample_sigmas(4000, 3.0, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert float(plain.min()) > 0.0 and float(plain.max()) < 1.0
    assert abs(float(plain.median()) - 0.5) < 0.03
    assert float(shifted.median()) > 0.7


def test_paths_start_at_their_source_and_end_at_clean():
    clean, degraded = torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)
    g = torch.Generator().manual_seed(0)
    bridge = flow.source("bridge", degraded, 0.0, g)
    assert torch.equal(bridge, degraded)
    noise = flow.source("noise", degraded, 0.0, g)
    assert abs(float(noise.std()) - 1.0) < 0.5 and not torch.equal(noise, degraded)
    mid = flow.interpolate(clean, bridge, torch.tensor([0.0, 0.25]))
    assert torch.equal(mid[0], clean[0]) and torch.allclose(mid[1], torch.full_like(mid[1], 0.25))
    # One Euler step of the true velocity over the whole interval lands on the clean latent.
    assert torch.equal(flow.euler_step(bridge, flow.velocity_target(clean, bridge), 1.0, 0.0), clean)
    with pytest.raises(ValueError, match="unknown flow"):
        flow.source("ddpm", degraded, 0.0, g)
