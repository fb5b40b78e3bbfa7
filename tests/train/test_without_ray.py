"""The GPU-box kit's quality run where Ray, MLflow, s3fs and pyiqa are not installed, as on the lent GPU box.

`benchmarks/stage1_quality.py` is how the small preset's quality gets measured there; a Ray import creeping into
the pieces it shares with the trainer would cost a scarce device session, so this runs it with those packages
hidden: a copy of this interpreter's site-packages without them (symbolic links), Python started with -S.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ABSENT = ("ray", "mlflow", "s3fs", "pyiqa")


def _site_without(absent: tuple[str, ...], into: Path) -> Path:
    into.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top not in absent and not entry.name.startswith(("__editable__", "realrestorer")):
            (into / entry.name).symlink_to(entry)
    return into


def test_stage1_quality_trains_and_scores_without_ray(tmp_path):
    site = _site_without(ABSENT, tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO / 'platform'}"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import importlib.util as u, sys; "
                            f"sys.exit(any(u.find_spec(n) for n in {ABSENT!r}))"], env=env)
    assert probe.returncode == 0, "the hidden packages are still importable"
    done = subprocess.run(
        [sys.executable, "-S", str(REPO / "benchmarks" / "stage1_quality.py"), "--preset", "tiny", "--minutes", "0.5",
         "--workers", "2", "--data", str(tmp_path / "pairs")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(without the PIQE filter)" in done.stdout  # pyiqa is absent: the pairs are built without it
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "stage1_quality" and result["steps"] >= 5 and result["val_pairs"] == 160
    # Half a minute of training already lifts the strong tasks clear of the identity baseline.
    assert {"haze", "rain"} <= set(result["wins"]), result["groups"]
    assert result["groups"]["mean"]["psnr"] > result["groups"]["mean"]["identity_psnr"]
    # A second run reuses the pairs; another seed may not mix its pairs into them.
    other = subprocess.run(
        [sys.executable, "-S", str(REPO / "benchmarks" / "stage1_quality.py"), "--preset", "tiny", "--data",
         str(tmp_path / "pairs"), "--set", "seed=1"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert other.returncode == 2 and "pass a new --data folder" in other.stderr, other.stderr[-2000:]
