"""The restorer end to end on a micro DiT: it learns, it samples, it uses its reference, it round-trips."""

from __future__ import annotations

import json

import pytest
import torch

from realrestorer.model import build_restorer, load_restorer
from realrestorer.model.sampler import sample
from realrestorer.model.transformer import pack, predict_velocity

from .conftest import micro_config, psnr

PROMPT = "Please dehaze the image"


def _train(restorer, clean, degraded, steps: int, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.AdamW(restorer.dit.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss = restorer(clean.repeat(4, 1, 1, 1), degraded.repeat(4, 1, 1, 1), [PROMPT] * 4, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture(scope="module")
def overfit(pair):
    """A micro restorer trained 120 steps on one pair (bridge flow, the tiny default)."""
    torch.set_num_threads(1)
    restorer = build_restorer(micro_config())
    losses = _train(restorer, *pair, steps=120)
    return restorer, losses


def test_only_the_dit_trains(overfit):
    restorer, _ = overfit
    assert all(p.requires_grad for p in restorer.dit.parameters())
    assert not any(p.requires_grad for p in restorer.text.parameters())
    restorer.train()
    assert not restorer.text.training  # dropout in the frozen encoder would randomise prompts


def test_loss_falls_on_a_fixed_batch(overfit):
    _, losses = overfit
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10


@pytest.mark.parametrize("flow", ["noise"])
def test_loss_falls_for_the_noise_flow_too(pair, flow):
    restorer = build_restorer(micro_config(flow=flow))
    losses = _train(restorer, *pair, steps=40)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_overfit_pair_is_restored_with_high_psnr(overfit, pair):
    restorer, _ = overfit
    clean, degraded = pair
    assert psnr(degraded, clean) < 20.0
    out = restorer.restore(degraded, [PROMPT])
    assert out.shape == clean.shape
    assert psnr(out, clean) > 30.0


def test_output_depends_on_the_reference(overfit, pair):
    restorer, _ = overfit
    clean, degraded = pair
    other = torch.flip(degraded, dims=[-1])
    a = restorer.restore(degraded, [PROMPT], num_steps=4)
    b = restorer.restore(other, [PROMPT], num_steps=4)
    assert float((a - b).abs().mean()) > 0.05


def test_mixed_sizes_come_back_at_their_own_sizes_independent_of_batching(overfit, pair):
    restorer, _ = overfit
    degraded = pair[1][0]
    wide = torch.nn.functional.interpolate(pair[1], size=(24, 50), mode="bilinear")[0]
    outs = restorer.restore([degraded, wide, degraded], [PROMPT] * 3, num_steps=3, seed=5)
    assert [tuple(o.shape) for o in outs] == [(3, 32, 32), (3, 24, 50), (3, 32, 32)]
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in outs)
    alone = restorer.restore([wide], [PROMPT], num_steps=3, seed=6)  # image 1 of the batch above used seed 5 + 1
    assert torch.allclose(alone[0], outs[1], atol=1e-5)


def test_keep_detail_adds_back_what_the_working_size_cannot_hold(overfit):
    """A hazy photo at three times the DiT's area: resized up from 32², the result is blurred; with keep_detail the
    input's finer detail comes back on top of the model's correction."""
    import cv2
    from skimage import data as skdata

    from .conftest import to_tensor

    restorer, _ = overfit
    clean = to_tensor(cv2.resize(skdata.astronaut(), (96, 96), interpolation=cv2.INTER_AREA))[None]
    hazy = (clean * 0.5 + 0.2).clamp(0.0, 1.0)
    resized = restorer.restore(hazy, [PROMPT], num_steps=4)
    kept = restorer.restore(hazy, [PROMPT], num_steps=4, keep_detail=True)
    assert psnr(resized, clean) > psnr(hazy, clean) + 2.0
    assert psnr(kept, clean) > psnr(resized, clean) + 3.0


def test_seeds_make_noise_flow_sampling_reproducible(pair):
    restorer = build_restorer(micro_config(flow="noise"))
    torch.nn.init.normal_(restorer.dit.proj_out.weight, std=0.02)
    a = restorer.restore(pair[1], [PROMPT], num_steps=2, seed=1)
    assert torch.equal(a, restorer.restore(pair[1], [PROMPT], num_steps=2, seed=1))
    assert not torch.equal(a, restorer.restore(pair[1], [PROMPT], num_steps=2, seed=2))


def test_guidance_batches_cond_and_uncond_into_one_forward(overfit, pair):
    restorer, _ = overfit
    torch.manual_seed(0)
    y = pack(restorer.codec.encode(pair[1]))
    cond = restorer.text.encode([PROMPT])
    empty = restorer.text.encode([""])
    calls = []
    hook = restorer.dit.register_forward_hook(lambda m, args, kwargs_out: calls.append(1))
    try:
        guided = sample(restorer.dit, y, y, 8, 8, cond, empty, num_steps=1, shift=1.0, guidance=3.0)
    finally:
        hook.remove()
    assert len(calls) == 1
    sigma = torch.ones(1)
    v_c = predict_velocity(restorer.dit, y, y, 8, 8, *cond, sigma)
    v_u = predict_velocity(restorer.dit, y, y, 8, 8, *empty, sigma)
    assert torch.allclose(guided, y - (v_u + 3.0 * (v_c - v_u)), atol=1e-5)


def test_save_load_round_trip_gives_identical_weights_and_outputs(overfit, pair, tmp_path):
    restorer, _ = overfit
    restorer.save(str(tmp_path / "ckpt"), {"preset": "micro", "metrics": {"psnr": 1.0}})
    card = json.loads((tmp_path / "ckpt" / "model_card.json").read_text())
    assert card["version"] == 1 and card["preset"] == "micro" and card["model"]["resolution"] == 32
    assert (tmp_path / "ckpt" / "dit" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_restorer(str(tmp_path / "ckpt"))
    trained = restorer.dit.state_dict()
    assert trained.keys() == loaded.dit.state_dict().keys()
    assert all(torch.equal(trained[k], v) for k, v in loaded.dit.state_dict().items())
    a = restorer.restore(pair[1], [PROMPT], num_steps=3)
    assert torch.equal(a, loaded.restore(pair[1], [PROMPT], num_steps=3))


def test_weights_merged_into_one_flat_buffer_save_in_shards_of_the_size_asked(overfit, tmp_path):
    """A DiT merged from a ZeRO-1/2 checkpoint is views of one flat fp32 buffer. Saved by storage it went to one
    file however large (48 GB at 12 B); it must be cut by size, and load back unchanged."""
    from realrestorer.model.restorer import build_dit, save_model

    restorer, _ = overfit
    trained = restorer.dit.state_dict()
    flat = torch.cat([v.flatten() for v in trained.values()])
    views, offset = {}, 0
    for name, value in trained.items():
        views[name] = flat.narrow(0, offset, value.numel()).view(value.shape)
        offset += value.numel()
    with torch.device("meta"):
        merged = build_dit(restorer.cfg)
    merged.load_state_dict(views, strict=True, assign=True)
    assert merged.proj_out.weight.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    save_model(merged, restorer.cfg, str(tmp_path / "ckpt"), {"preset": "micro"}, max_shard_size=flat.numel())  # 1/4 of it
    dit_dir = tmp_path / "ckpt" / "dit"
    shards = sorted(dit_dir.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) >= 4 and all(path.stat().st_size < 1.2 * flat.numel() for path in shards)
    index = json.loads((dit_dir / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(trained) and index["metadata"]["total_size"] == 4 * flat.numel()
    loaded = load_restorer(str(tmp_path / "ckpt")).dit.state_dict()
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_bad_batches_fail_with_clear_errors(overfit, pair):
    restorer, _ = overfit
    with pytest.raises(ValueError, match="prompts for a batch"):
        restorer(pair[0], pair[1], [PROMPT, PROMPT])
    with pytest.raises(ValueError, match="B×3×H×W"):
        restorer(pair[0], pair[1][:, :2], [PROMPT])
    with pytest.raises(ValueError, match="3×H×W"):
        restorer.restore([pair[1][0, :1]], [PROMPT])
    with pytest.raises(ValueError, match=r"floats in \[0, 1\], got torch.uint8"):
        restorer.restore((pair[1] * 255).to(torch.uint8), [PROMPT])
    with pytest.raises(ValueError, match="no images"):
        restorer.restore([], [])


def test_relative_loss_weighting_scores_each_sample_by_the_share_of_its_degradation_left():
    from realrestorer.model.flow import weighted_mse

    # A mild sample (small residual) and a severe one (50× larger), each predicted with half its residual missing.
    target = torch.stack([torch.full((4, 3), 0.02), torch.full((4, 3), 1.0)])
    pred = 0.5 * target
    plain = weighted_mse(pred, target, "none", 1e-3)
    assert plain == pytest.approx(((0.01**2) + 0.5**2) / 2)  # the severe sample is nearly all of it
    floor = 1e-6
    relative = weighted_mse(pred, target, "relative", floor)
    assert relative == pytest.approx(0.25, rel=1e-2)  # both samples count alike: a quarter of their identity loss
    # Undoing the mild sample's degradation completely lowers the relative loss by half; the plain loss barely moves.
    pred_mild_fixed = torch.stack([target[0], pred[1]])
    assert weighted_mse(pred_mild_fixed, target, "relative", floor) == pytest.approx(0.125, rel=1e-2)
    assert weighted_mse(pred_mild_fixed, target, "none", 1e-3) > 0.99 * plain
    with pytest.raises(ValueError, match="unknown loss weighting"):
        weighted_mse(pred, target, "psnr", floor)


def test_compiled_blocks_train_like_the_eager_ones_and_keep_their_weight_names(pair):
    """`train.<stage>.compile`: the same loss and gradients as eager execution, and the same state dict."""
    from torch._dynamo.utils import counters

    from realrestorer.model.transformer import compile_blocks

    clean, degraded = (image.repeat(2, 1, 1, 1) for image in pair)
    counters.clear()
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        restorer = build_restorer(micro_config())
        keys = list(restorer.dit.state_dict())
        if compiled:
            compile_blocks(restorer.dit)
            assert list(restorer.dit.state_dict()) == keys
        # A few plain SGD steps, so the blocks carry non-trivial weights (the output layer starts at zero).
        opt = torch.optim.SGD(restorer.dit.parameters(), lr=0.05)
        for step in range(3):
            loss = restorer(clean, degraded, [PROMPT] * 2, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
        grads = {name: p.grad.clone() for name, p in restorer.dit.named_parameters()}
        runs.append((float(loss.detach()), grads))
    assert counters["stats"]["unique_graphs"] > 0, "the blocks ran uncompiled"
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = runs
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    # The blocks did learn something: a gradient that is zero everywhere would pass the comparison trivially.
    assert all(grad.abs().sum() > 0 for name, grad in eager_grads.items() if name.startswith("transformer_blocks.0.attn"))


def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients(pair):
    """`train.<stage>.grad_checkpointing` (the flux-12b preset) trades compute for memory: every block runs again
    in backward, and the gradients are those of the run that kept its activations."""
    clean, degraded = pair

    def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        torch.manual_seed(0)
        restorer = build_restorer(micro_config()).train()
        if checkpointing:
            restorer.dit.enable_gradient_checkpointing()
        calls = []
        blocks = [*restorer.dit.transformer_blocks, *restorer.dit.single_transformer_blocks]
        for block in blocks:
            # A pre-hook: torch stops a recomputed block as soon as it has what backward needs, before it returns.
            block.register_forward_pre_hook(lambda *_: calls.append(1))
        loss = restorer(clean.repeat(2, 1, 1, 1), degraded.repeat(2, 1, 1, 1), [PROMPT] * 2,
                        generator=torch.Generator().manual_seed(0))
        forward_calls = len(calls)
        loss.backward()
        assert forward_calls == len(blocks)
        return {n: p.grad.clone() for n, p in restorer.dit.named_parameters()}, len(calls) - forward_calls

    kept, recomputed_kept = gradients(False)
    checkpointed, recomputed = gradients(True)
    assert recomputed_kept == 0 and recomputed == 2  # one double and one single block, each run again
    for name, grad in kept.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(grad.abs().sum() > 0 for grad in kept.values())
