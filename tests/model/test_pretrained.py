"""Pretrained components load from local directories and s3:// in their real formats; missing files fail clearly."""

from __future__ import annotations

import pytest
import torch

from realrestorer.model import MissingWeightsError, ModelConfig, build_restorer, load_restorer

from .conftest import psnr

WORDS = ["please", "remove", "the", "noise", "from", "image", "dehaze", "."]


def _save_text_encoder(path) -> None:
    """A 2-layer BERT with a WordPiece vocabulary written here: no download involved."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(cfg).save_pretrained(str(path))


def _save_vae(path) -> None:
    """A FLUX-VAE-shaped AutoencoderKL (16 latent channels, /8, scale and shift) with 8-channel blocks."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).save_pretrained(str(path))


DIT = {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2, "in_channels": 64,
       "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": [4, 6, 6]}


def _save_dit(path) -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(1)
    FluxTransformer2DModel(**DIT).save_pretrained(str(path))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    _save_text_encoder(root / "text")
    _save_vae(root / "vae")
    _save_dit(root / "dit")
    return root


def _config(weights, **overrides) -> ModelConfig:
    tree = {"dit": DIT, "codec": "vae", "vae_path": str(weights / "vae"), "text_encoder_path": str(weights / "text"),
            "pretrained_dit_path": str(weights / "dit"), "resolution": 32, "flow": "noise"}
    return ModelConfig.model_validate({**tree, **overrides})


def test_restorer_builds_from_local_pretrained_components(weights):
    from diffusers import FluxTransformer2DModel

    restorer = build_restorer(_config(weights))
    assert restorer.codec.scale == pytest.approx(0.3611) and restorer.codec.shift == pytest.approx(0.1159)
    assert restorer.text.hidden_size == 32
    saved = FluxTransformer2DModel.from_pretrained(str(weights / "dit")).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in restorer.dit.state_dict().items())
    # The prompt reaches the encoder through the saved WordPiece vocabulary: known words differ from unknown ones.
    a, _ = restorer.text.encode(["please remove the noise"])
    b, _ = restorer.text.encode(["zzz qqq"])
    assert not torch.allclose(a, b)
    img = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0))
    loss = restorer(img, img, ["please dehaze the image ."] * 2)
    assert torch.isfinite(loss)
    out = restorer.restore(img, ["please dehaze the image ."] * 2, num_steps=2, guidance=2.0)
    assert out.shape == img.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_vae_codec_scales_and_shifts_latents(weights):
    restorer = build_restorer(_config(weights))
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = restorer.codec.vae.encode(img * 2 - 1).latent_dist.mode()
    assert torch.allclose(restorer.codec.encode(img), (z - 0.1159) * 0.3611, atol=1e-5)
    assert restorer.codec.encode(img).shape == (1, 16, 4, 4)


@pytest.mark.parametrize(
    "key,filename",
    [("vae_path", "diffusion_pytorch_model.safetensors"), ("text_encoder_path", "model.safetensors"),
     ("pretrained_dit_path", "config.json"), ("text_encoder_path", "vocab.txt")],
)
def test_a_missing_file_names_the_file_and_the_config_key(weights, tmp_path, key, filename):
    import shutil

    source = {"vae_path": "vae", "text_encoder_path": "text", "pretrained_dit_path": "dit"}[key]
    broken = tmp_path / source
    shutil.copytree(weights / source, broken)
    for name in [filename, "tokenizer.json"] if filename == "vocab.txt" else [filename]:
        (broken / name).unlink()
    with pytest.raises(MissingWeightsError) as err:
        build_restorer(_config(weights, **{key: str(broken)}))
    message = str(err.value)
    assert "\n" not in message and f"model.{key}" in message and filename in message


def test_a_missing_directory_names_the_config_key(weights, tmp_path):
    with pytest.raises(MissingWeightsError, match=r"model\.vae_path: directory .*nowhere not found"):
        build_restorer(_config(weights, vae_path=str(tmp_path / "nowhere")))


def test_a_dit_of_another_shape_is_refused(weights):
    with pytest.raises(ValueError, match="num_single_layers"):
        build_restorer(_config(weights, dit={**DIT, "num_single_layers": 2}))


def test_components_and_checkpoints_load_from_s3(weights, s3_server, tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("REALRESTORER_CACHE", str(tmp_path / "cache"))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.put(str(weights / "vae") + "/", "test-bucket/model-tests/vae", recursive=True)
    restorer = build_restorer(_config(weights, vae_path="s3://test-bucket/model-tests/vae"))
    assert restorer.codec.channels == 16
    restorer.save("s3://test-bucket/model-tests/ckpt", {"preset": "test"})
    assert fs.exists("test-bucket/model-tests/ckpt/dit/diffusion_pytorch_model.safetensors")
    loaded = load_restorer("s3://test-bucket/model-tests/ckpt")
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = restorer.restore(img, ["noise"], num_steps=2)
    assert psnr(a, loaded.restore(img, ["noise"], num_steps=2)) == float("inf")
    with pytest.raises(MissingWeightsError, match=r"checkpoint: s3://test-bucket/model-tests/absent not found"):
        load_restorer("s3://test-bucket/model-tests/absent")

    # Saved again over an earlier save in shards: the old shards and their index go, or the index would win.
    from realrestorer.model.restorer import save_model

    save_model(restorer.dit, restorer.cfg, "s3://test-bucket/model-tests/over", {"preset": "test"}, max_shard_size=20_000)
    assert fs.exists("test-bucket/model-tests/over/dit/diffusion_pytorch_model.safetensors.index.json")
    with torch.no_grad():
        restorer.dit.proj_out.weight.add_(0.5)
    save_model(restorer.dit, restorer.cfg, "s3://test-bucket/model-tests/over", {"preset": "test"})
    assert [p.rsplit("/", 1)[1] for p in fs.ls("test-bucket/model-tests/over/dit", refresh=True)] == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    again = load_restorer("s3://test-bucket/model-tests/over")
    assert torch.equal(again.dit.proj_out.weight, restorer.dit.proj_out.weight)


def _fetch(uri: str, start, results) -> None:
    """One node's worker: wait for the others, then resolve the remote weights to the local cache."""
    import hashlib

    from realrestorer.model.weights import resolve_dir

    start.wait()
    local = resolve_dir(uri, "model.pretrained_dit_path", (("weights.bin",),))
    stat = (local / "weights.bin").stat()
    results.put((hashlib.sha256((local / "weights.bin").read_bytes()).hexdigest(), stat.st_ino, stat.st_mtime_ns))


def test_workers_of_one_node_fetch_remote_weights_once(s3_server, tmp_path, monkeypatch):
    """Four processes ask for the same s3:// weights at once: one download, and each reads the complete file."""
    import hashlib
    import multiprocessing

    import numpy as np
    import s3fs

    payload = np.random.default_rng(0).bytes(48 * 2**20)
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}).pipe("test-bucket/node-cache/weights.bin", payload)
    monkeypatch.setenv("REALRESTORER_CACHE", str(tmp_path / "cache"))
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_fetch, args=("s3://test-bucket/node-cache", start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    # Every worker read the whole file, and all saw the same write of it: it was fetched once.
    assert {digest for digest, _, _ in seen} == {hashlib.sha256(payload).hexdigest()}
    assert len({(ino, mtime) for _, ino, mtime in seen}) == 1
