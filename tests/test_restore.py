"""`realrestorer restore`: a trained model restores image files, as a user runs it (a subprocess, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from realrestorer.degrade import TASKS
from realrestorer.restore import plan_outputs
from tests.conftest import psnr
from tests.model.conftest import micro_config

CLI = [sys.executable, "-m", "realrestorer.cli", "restore"]
PROMPT = TASKS["haze"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def haze_pair(photo) -> tuple[np.ndarray, np.ndarray]:
    """A 32² clean photo and its washed-out, hazy version (uint8 RGB)."""
    clean = cv2.resize(photo, (32, 32), interpolation=cv2.INTER_AREA)
    return clean, np.clip(clean * 0.5 + 51, 0, 255).astype(np.uint8)


def save(restorer, directory: Path) -> Path:
    from realrestorer.model.restorer import save_model

    save_model(restorer.dit, restorer.cfg, str(directory), {"run_name": "test", "step": 0})
    return directory


@pytest.fixture(scope="module")
def model_dir(haze_pair, tmp_path_factory) -> Path:
    """A micro restorer trained on the pair until it removes the haze, saved as a training stage saves its model."""
    from realrestorer.model import build_restorer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    restorer = build_restorer(micro_config(num_steps=4))
    clean, hazy = (torch.from_numpy(x).permute(2, 0, 1)[None].float().repeat(4, 1, 1, 1) / 255.0 for x in haze_pair)
    opt = torch.optim.AdamW(restorer.dit.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        loss = restorer(clean, hazy, [PROMPT] * 4, generator=generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save(restorer, tmp_path_factory.mktemp("model") / "tiny-stage1")


def test_a_folder_is_restored_skipping_what_cannot_be_read_and_a_rerun_keeps_the_outputs(model_dir, haze_pair, tmp_path):
    clean, hazy = haze_pair
    inputs = tmp_path / "in"
    write_rgb(inputs / "hazy.png", hazy)
    write_rgb(inputs / "nested" / "wide.jpg", cv2.resize(hazy, (64, 32), interpolation=cv2.INTER_AREA))
    rgba = np.dstack([hazy, np.tile(np.arange(32, dtype=np.uint8)[None] * 8, (32, 1))])
    cv2.imwrite(str(inputs / "with_alpha.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(inputs / "gray.png"), cv2.cvtColor(hazy, cv2.COLOR_RGB2GRAY))
    (inputs / "notes.png").write_text("not an image")
    (inputs / "cut.jpg").write_bytes((inputs / "nested" / "wide.jpg").read_bytes()[:200])
    (inputs / "readme.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"

    done = run(str(model_dir), str(inputs), "-o", str(out), "--task", "haze", "--batch", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "restored 4 of 6 images" in done.stdout and "skipped 2" in done.stdout, done.stdout
    assert "notes.png" in done.stderr and "cut.jpg" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "gray.png", "hazy.png", "nested/wide.png", "with_alpha.png"]
    # The haze is removed: the trained pair comes back far closer to the clean photo than its input.
    restored = read_rgb(out / "hazy.png")
    assert psnr(hazy, clean) < 18.0 and psnr(restored, clean) > psnr(hazy, clean) + 8.0, psnr(restored, clean)
    # Each output keeps its input's size; an alpha plane comes back untouched; a gray input comes back as RGB.
    assert read_rgb(out / "nested" / "wide.png").shape == (32, 64, 3)
    back = cv2.imread(str(out / "with_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (32, 32, 4) and np.array_equal(back[..., 3], rgba[..., 3])
    assert np.array_equal(back[..., 2::-1], restored)  # same pixels as the RGB file: alpha plays no part
    assert read_rgb(out / "gray.png").shape == (32, 32, 3)
    assert not list(out.rglob(".*partial*"))

    # Run again: the outputs are kept, nothing is restored twice; --overwrite redoes them to the same bytes.
    first = (out / "hazy.png").read_bytes()
    again = run(str(model_dir), str(inputs), "-o", str(out), "--task", "haze", "--quiet")
    assert again.returncode == 0 and "restored 0 of 6" in again.stdout and "kept 4 already restored" in again.stdout
    # Another prompt into the same folder is refused rather than mixed with these outputs.
    other = run(str(model_dir), str(inputs), "-o", str(out), "--task", "rain", "--quiet")
    assert other.returncode == 1 and "holds the outputs of a run with other settings (prompt" in other.stderr, other.stderr
    (out / "hazy.png").unlink()
    redo = run(str(model_dir), str(inputs / "hazy.png"), "-o", str(out), "--task", "haze", "--overwrite", "--quiet")
    assert redo.returncode == 0 and "restored 1 of 1" in redo.stdout
    assert (out / "hazy.png").read_bytes() == first


def test_a_prompt_of_ones_own_reaches_the_model(model_dir, haze_pair, tmp_path):
    image = write_rgb(tmp_path / "hazy.png", haze_pair[1])
    for name, args in (("task", ["--task", "haze"]), ("same", ["--prompt", PROMPT]), ("empty", ["--prompt", ""])):
        done = run(str(model_dir), str(image), "-o", str(tmp_path / name), *args, "--quiet")
        assert done.returncode == 0, done.stderr[-2000:]
    task, same, empty = ((tmp_path / name / "hazy.png").read_bytes() for name in ("task", "same", "empty"))
    assert same == task and empty != task


def test_outputs_that_would_collide_are_refused_before_any_work(tmp_path):
    write_rgb(tmp_path / "x" / "photo.png", np.zeros((8, 8, 3), np.uint8))
    write_rgb(tmp_path / "y" / "photo.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="would both be written to"):
        plan_outputs([str(tmp_path / "x" / "photo.png"), str(tmp_path / "y" / "photo.jpg")], tmp_path / "out")
    # The same file named twice, directly and through its folder, is planned once.
    assert len(plan_outputs([str(tmp_path / "x"), str(tmp_path / "x" / "photo.png")], tmp_path / "out")) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["{tmp}/no_model", "{image}", "-o", "{tmp}/o", "--task", "haze"], "model: directory {tmp}/no_model not found"),
        (["{broken}", "{image}", "-o", "{tmp}/o", "--task", "haze"], "model: {broken}/dit/config.json not found"),
        (["{model}", "{tmp}/nope.png", "-o", "{tmp}/o", "--task", "haze"], "nope.png: no such file or folder"),
        (["{model}", "{tmp}/empty_dir", "-o", "{tmp}/o", "--task", "haze"], "no images in this folder"),
        (["{model}", "{image}", "-o", "{tmp}/o", "--task", "haze", "--batch", "0"], "--batch must be at least 1"),
        (["{model}", "{image}", "-o", "{tmp}/o", "--task", "haze", "--steps", "0"], "--steps must be at least 1"),
        (["{model}", "{image}", "-o", "{tmp}/o", "--task", "haze", "--guidance", "-1"], "--guidance must be at least 0"),
        (["{model}", "{image}", "-o", "{tmp}/o", "--task", "haze", "--device", "cuda"], "no CUDA GPU is visible"),
        (["{model}", "{image}", "-o", "{tmp}/o", "--task", "haze", "--device", "tpu9"], "--device tpu9: "),
        (["{model}", "{image}", "-o", "{image}", "--task", "haze"], "is a file; -o names the folder"),
        (["{model}", "{tmp}", "-o", "{tmp}", "--task", "haze"], "is also the output folder"),
        (["{model}", "{image}", "-o", "{tmp}", "--task", "haze"], "would be overwritten by its own restoration"),
        (["{model}", "{text}", "-o", "{tmp}/o", "--task", "haze"], "not a readable image"),
    ],
)
def test_mistakes_get_one_line(args, message, model_dir, tmp_path):
    if message.startswith("no CUDA") and torch.cuda.is_available():  # the case is about a machine without one
        message = "restored 1 of 1"
    image = write_rgb(tmp_path / "in.png", np.full((16, 16, 3), 128, np.uint8))
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_card.json").write_text("{}")
    names = {"tmp": str(tmp_path), "image": str(image), "model": str(model_dir), "broken": str(broken),
             "text": str(tmp_path / "text.png")}
    done = run(*[a.format(**names) for a in args])
    output = done.stdout + done.stderr
    assert message.format(**names) in output, output
    assert "Traceback" not in output
    if not message.startswith("restored"):
        assert done.returncode != 0
        assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.png"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["m", "x.png", "-o", "o"], "one of the arguments --task --prompt is required"),
        (["m", "x.png", "-o", "o", "--task", "sharpen"], "invalid choice"),
        (["m", "x.png", "-o", "o", "--task", "haze", "--prompt", "x"], "not allowed with argument"),
        (["m", "x.png", "--task", "haze"], "the following arguments are required: -o"),
    ],
)
def test_usage_mistakes_get_one_line(args, message, capsys):
    from realrestorer.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["restore", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_outputs_inside_an_input_folder_are_not_restored_again_and_a_folder_inside_out_is_read(model_dir, haze_pair, tmp_path):
    photos = tmp_path / "photos"
    write_rgb(photos / "hazy.png", haze_pair[1])
    for attempt in range(2):
        done = run(str(model_dir), str(photos), "-o", str(photos / "restored"), "--task", "haze", "--quiet")
        assert done.returncode == 0 and f"restored {1 - attempt} of 1 images" in done.stdout, done.stdout + done.stderr
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png")) == ["hazy.png", "restored/hazy.png"]
    # The other way round, a folder inside OUT is scanned whole; and the model card's steps given explicitly are
    # the settings the first run recorded, not other ones.
    done = run(str(model_dir), str(photos), "-o", str(tmp_path), "--task", "haze", "--quiet")
    assert done.returncode == 0 and "restored 2 of 2 images" in done.stdout, done.stdout + done.stderr
    same = run(str(model_dir), str(photos), "-o", str(tmp_path), "--task", "haze", "--steps", "4", "--quiet")
    assert same.returncode == 0 and "kept 2 already restored" in same.stdout, same.stdout + same.stderr


def test_a_noisy_sampler_seeds_each_image_by_its_place_in_the_run(haze_pair, tmp_path):
    """With a noise flow, image k samples with seed + k: the same bytes whatever the batch or what a run before did."""
    from realrestorer.model import build_restorer

    torch.manual_seed(0)
    restorer = build_restorer(micro_config(flow="noise", num_steps=2))
    torch.nn.init.normal_(restorer.dit.proj_out.weight, std=0.05)  # untrained, but the noise shows in the output
    model = save(restorer, tmp_path / "noise-model")
    inputs = tmp_path / "in"
    for name in ("a", "b", "c"):
        write_rgb(inputs / f"{name}.png", haze_pair[1])
    for out, batch in (("one", "1"), ("three", "3")):
        assert run(str(model), str(inputs), "-o", str(tmp_path / out), "--task", "haze", "--batch", batch,
                   "--seed", "7", "--quiet").returncode == 0
    one, three = ({n: (tmp_path / out / f"{n}.png").read_bytes() for n in "abc"} for out in ("one", "three"))
    assert one == three
    assert len(set(one.values())) == 3  # the same input, three seeds
    (tmp_path / "three" / "c.png").unlink()  # as if a run had stopped after two images
    done = run(str(model), str(inputs), "-o", str(tmp_path / "three"), "--task", "haze", "--seed", "7", "--quiet")
    assert "restored 1 of 3" in done.stdout and (tmp_path / "three" / "c.png").read_bytes() == one["c"]


def test_keep_detail_sharpens_a_photo_larger_than_the_model_works_at(model_dir, photo, tmp_path):
    clean = cv2.resize(photo, (96, 96), interpolation=cv2.INTER_AREA)
    image = write_rgb(tmp_path / "big.png", np.clip(clean * 0.5 + 51, 0, 255).astype(np.uint8))
    for name, extra in (("resized", ["--no-keep-detail"]), ("kept", [])):
        done = run(str(model_dir), str(image), "-o", str(tmp_path / name), "--task", "haze", "--quiet", *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    resized, kept = (read_rgb(tmp_path / name / "big.png") for name in ("resized", "kept"))
    assert psnr(kept, clean) > psnr(resized, clean) + 3.0
