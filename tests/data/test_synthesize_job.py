"""Smoke test: `jobs/synthesize.py` as a subprocess on the session's local Ray, tiny preset (PIQE on, MUSIQ without weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_synthesize_job_runs_the_tiny_preset(ray_session, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    command = [sys.executable, str(ROOT / "jobs" / "synthesize.py"), "--preset", "tiny",
               "--set", f"data.output={tmp_path / 'pairs'}", "--set", "data.crops_per_image=2",
               "--set", "data.filters.quality_metrics=[piqe, musiq]", "--json"]
    done = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["num_pairs"] > 0
    # MUSIQ has no weights here: reported unavailable with the reason, not silently dropped.
    assert summary["quality_metrics"]["used"] == ["piqe"]
    assert "no weights named musiq" in summary["quality_metrics"]["unavailable"]["musiq"]
    assert "rejected:" in done.stdout and "pairs/s" in done.stdout
    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    assert manifest["num_pairs"] == summary["num_pairs"]


def test_synthesize_job_help_and_bad_override():
    helped = subprocess.run([sys.executable, str(ROOT / "jobs" / "synthesize.py"), "--help"], check=False, capture_output=True, text=True)
    assert helped.returncode == 0 and "--preset" in helped.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "jobs" / "synthesize.py"), "--set", "data.resolution=-3"],
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "data.resolution" in bad.stderr and "Traceback" not in bad.stderr
