"""Stage-2 mixing: the schedule of the synthetic share, and a reader that follows it. Rows in memory, no Ray."""

from __future__ import annotations

import numpy as np
import pytest
from realrestorer.config import ConfigError, load_config
from realrestorer.data.config import MixingConfig
from realrestorer.data.mixing import MixingReader, ratio_at
from realrestorer.data.shards import encode_image


def _rows(kind: str, n: int) -> list[dict]:
    image = encode_image(np.zeros((4, 4, 3), np.uint8))
    return [{"clean": image, "degraded": image, "prompt": "p", "task": "noise", "kind": kind} for _ in range(n)]


def test_default_schedule_decays_from_the_stage1_mix_to_the_final_ratio():
    cfg = MixingConfig()
    assert (cfg.start_ratio, cfg.final_ratio, cfg.decay_fraction) == (1.0, 0.2, 0.5)
    for num_steps in (9, 101, 5001):  # positions are relative: the same curve for every preset's step count
        last = num_steps - 1
        assert ratio_at(0, cfg, num_steps) == 1.0
        assert ratio_at(last // 4, cfg, num_steps) == pytest.approx(0.6, abs=0.01)  # a cosine is half-way at half its span
        assert ratio_at(last // 2, cfg, num_steps) == pytest.approx(0.2) == ratio_at(last, cfg, num_steps)
        ratios = [ratio_at(step, cfg, num_steps) for step in range(num_steps)]
        assert all(a >= b for a, b in zip(ratios, ratios[1:]))
    assert ratio_at(0, MixingConfig(decay_fraction=0.0, final_ratio=0.3), 100) == 0.3
    assert ratio_at(10, MixingConfig(start_ratio=0.1, final_ratio=0.5, decay_fraction=1.0), 11) == 0.5


def test_an_explicit_schedule_overrides_and_is_relative_to_the_planned_steps():
    cfg = MixingConfig(schedule=[(0.0, 1.0), (0.5, 0.5)], final_ratio=0.9)
    assert [ratio_at(step, cfg, 101) for step in (0, 25, 50, 100, 500)] == [1.0, 0.75, 0.5, 0.5, 0.5]
    assert ratio_at(25, cfg, 51) == 0.5


def test_the_realised_synthetic_share_follows_the_schedule():
    num_steps, batch_size, window = 200, 32, 20
    cfg = MixingConfig(web_augment_prob=0.0)
    reader = MixingReader(_rows("synthetic", 5), _rows("proxy", 5), cfg, batch_size, num_steps, seed=1)
    shares, expected = [], []
    for start in range(0, num_steps, window):
        kinds = [k for _ in range(window) for k in next(reader)["kind"]]
        shares.append(np.mean([k == "synthetic" for k in kinds]))
        expected.append(np.mean([ratio_at(step, cfg, num_steps) for step in range(start, start + window)]))
    # 640 draws per window: a binomial standard deviation of at most 0.02.
    assert np.abs(np.array(shares) - np.array(expected)).max() < 0.06, (shares, expected)
    assert shares[0] > 0.9 and abs(shares[-1] - 0.2) < 0.06


def test_a_bad_mixing_setting_is_one_line_naming_the_key():
    cases = {
        "data.mixing.final_ratio=1.5": "data.mixing.final_ratio",
        "data.mixing.decay_fraction=-0.1": "data.mixing.decay_fraction",
        "data.mixing.schedule=[[0, 1.0], [100, 0.5]]": "data.mixing.schedule: positions are fractions",
        "data.mixing.schedule=[[0.5, 1.0], [0.2, 0.5]]": "data.mixing.schedule: positions must be strictly increasing",
        "data.mixing.schedule=[[0.0, 1.5]]": "data.mixing.schedule: ratios must lie in [0, 1]",
        "data.mixing.synthetic_ratio=0.5": "data.mixing.synthetic_ratio",
    }
    for override, start in cases.items():
        with pytest.raises(ConfigError) as err:
            load_config("tiny", [override])
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)
