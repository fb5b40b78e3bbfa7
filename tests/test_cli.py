"""The `realrestorer` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.conftest import psnr

CLI = [sys.executable, "-m", "realrestorer.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("cli") / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return path


def test_help_on_every_command():
    for args in ([], ["degrade"], ["tasks"], ["config"], ["restore"]):
        result = run(*args, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


def test_degrade_one_task(image_file, tmp_path, photo):
    out = tmp_path / "hazy.png"
    params = tmp_path / "params.json"
    result = run("degrade", str(image_file), "--task", "haze", "--severity", "0.7", "--seed", "3", "-o", str(out),
                 "--params", str(params))
    assert result.returncode == 0, result.stderr
    hazy = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert hazy.shape == photo.shape and psnr(hazy, photo) < 30
    assert '"task": "haze"' in params.read_text()
    again = tmp_path / "again.png"
    assert run("degrade", str(image_file), "--task", "haze", "--severity", "0.7", "--seed", "3", "-o", str(again)).returncode == 0
    assert out.read_bytes() == again.read_bytes()


def test_gallery_with_builtin_photo(tmp_path):
    out = tmp_path / "gallery.png"
    result = run("degrade", "--gallery", str(out))
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out))
    from realrestorer.degrade import ALL_TASKS

    rows, cols = len(ALL_TASKS), 4
    assert sheet.shape[0] == rows * 256 and sheet.shape[1] == cols * 256
    # each cell differs from the clean one in its row: the degradations are visible
    clean = sheet[:256, :256]
    assert all(psnr(sheet[:256, c * 256:(c + 1) * 256], clean) < 40 for c in range(1, cols))


@pytest.mark.parametrize(
    "args,message",
    [
        (["{missing}", "-o", "{tmp}/o.png"], "no such file"),
        (["{text}", "-o", "{tmp}/o.png"], "not a readable image"),
        (["{empty}", "-o", "{tmp}/o.png"], "empty"),
        (["{truncated}", "-o", "{tmp}/o.png"], "image"),
        (["{image}", "--task", "sharpen", "-o", "{tmp}/o.png"], "invalid choice"),
        (["{image}", "--severity", "1.5", "-o", "{tmp}/o.png"], "severity"),
        (["{image}", "-o", "{tmp}/no/such/dir/o.png"], "does not exist"),
        (["{image}", "-o", "{tmp}/o.xyz"], "unknown image format"),
        (["{image}"], "say where"),
        (["{image}", "-o", "{tmp}/o.png", "--params", "{tmp}/no/dir/p.json"], "cannot write"),
    ],
)
def test_bad_input_gets_one_line_error(args, message, tmp_path, image_file):
    (tmp_path / "notes.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(image_file.read_bytes()[:300])
    names = {"missing": tmp_path / "nope.png", "text": tmp_path / "notes.png", "empty": tmp_path / "empty.png",
             "truncated": tmp_path / "cut.png", "image": image_file, "tmp": tmp_path}
    result = run("degrade", *[a.format(**names) for a in args])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_prints_resolved_tree():
    result = run("config", "--set", "degrade.severity_max=0.6")
    assert result.returncode == 0 and "severity_max: 0.6" in result.stdout
    result = run("config", "--set", "degrade.nope=1")
    assert result.returncode == 1 and "degrade.nope" in result.stderr and "Traceback" not in result.stderr
