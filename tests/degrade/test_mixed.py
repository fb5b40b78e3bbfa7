"""Mixed: degradations composed in physical order, reproducible step by step."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from realrestorer.degrade import TASKS, apply, degrade, haze, mixed, rain


def test_physical_order_covers_the_nine_tasks():
    assert sorted(mixed.PHYSICAL_ORDER) == sorted(TASKS)
    assert mixed.PHYSICAL_ORDER.index("haze") < mixed.PHYSICAL_ORDER.index("blur") < mixed.PHYSICAL_ORDER.index("noise")
    assert mixed.PHYSICAL_ORDER[-1] == "compression"


@pytest.mark.parametrize("seed", range(6))
def test_output_is_its_recorded_steps_applied_one_by_one(photo, seed):
    clean = photo.astype(np.float32) / 255.0  # float, so no rounding between steps
    out, params = degrade("mixed", clean, np.random.default_rng(seed), 0.5)
    steps = params["steps"]
    tasks = [step["task"] for step in steps]
    assert 2 <= len(steps) <= 3 and len(set(tasks)) == len(tasks)
    ranks = [mixed.PHYSICAL_ORDER.index(task) for task in tasks]
    assert ranks == sorted(ranks), f"{tasks} is not in physical order"

    expected = clean
    for step in steps:
        expected = apply(step["task"], expected, step)
    assert np.array_equal(out, expected)


def test_tasks_are_picked_uniformly_and_severities_stay_close():
    rgb = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    counts: Counter[str] = Counter()
    sizes: Counter[int] = Counter()
    num_mixtures = 270
    for seed in range(num_mixtures):
        steps = mixed.sample(rgb, np.random.default_rng(seed), 0.5)["steps"]
        counts.update(step["task"] for step in steps)
        sizes[len(steps)] += 1
        assert all(0.4 <= step["severity"] <= 0.6 for step in steps)
    assert set(sizes) == {2, 3}
    expected = num_mixtures * 2.5 / 9  # ~75 appearances each
    assert set(counts) == set(TASKS)
    assert all(0.6 * expected < count < 1.4 * expected for count in counts.values()), counts


def test_higher_severity_makes_every_step_stronger():
    rgb = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    for seed in range(10):
        mild = mixed.sample(rgb, np.random.default_rng(seed), 0.2)["steps"]
        strong = mixed.sample(rgb, np.random.default_rng(seed), 0.8)["steps"]
        assert [s["task"] for s in mild] == [s["task"] for s in strong]
        assert all(b["severity"] > a["severity"] for a, b in zip(mild, strong))


def test_context_reaches_the_steps_that_use_it(photo):
    clean = photo.astype(np.float32) / 255.0
    rng = np.random.default_rng(5)
    steps = [
        {"task": "haze", "severity": 0.6, **haze.sample(clean, rng, 0.6)},
        {"task": "rain", "severity": 0.4, **rain.sample(clean, rng, 0.4)},
    ]
    ramp = np.tile(np.linspace(0.0, 1.0, clean.shape[1], dtype=np.float32), (clean.shape[0], 1))
    out = apply("mixed", clean, {"task": "mixed", "steps": steps}, depth=ramp)
    assert steps[0]["depth"] == "external"
    expected = apply("rain", apply("haze", clean, steps[0], depth=ramp), steps[1])
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, apply("rain", apply("haze", clean, {**steps[0], "depth": "prior"}), steps[1]))


def test_steps_out_of_physical_order_are_refused(photo):
    clean = photo.astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    steps = [
        {"task": "rain", "severity": 0.5, **rain.sample(clean, rng, 0.5)},
        {"task": "haze", "severity": 0.5, **haze.sample(clean, rng, 0.5)},
    ]
    with pytest.raises(ValueError, match="physical|order"):
        apply("mixed", clean, {"task": "mixed", "steps": steps})


def test_a_reflection_layer_reaches_the_reflection_step(photo):
    clean = photo.astype(np.float32) / 255.0
    glass = np.zeros_like(clean)
    glass[..., 2] = 1.0  # a blue scene behind the camera
    seed = next(s for s in range(100)
                if "reflection" in [step["task"] for step in mixed.sample(clean, np.random.default_rng(s), 0.5)["steps"]])
    out, params = degrade("mixed", clean, np.random.default_rng(seed), 0.5, reflection=glass)
    (step,) = [step for step in params["steps"] if step["task"] == "reflection"]
    assert step["layer"] == "external"
    assert np.array_equal(apply("mixed", clean, params, reflection=glass), out)
    # Steps other than reflection take no layer: a chain without one is unchanged by it.
    seed = next(s for s in range(100)
                if "reflection" not in [step["task"] for step in mixed.sample(clean, np.random.default_rng(s), 0.5)["steps"]])
    alone, _ = degrade("mixed", clean, np.random.default_rng(seed), 0.5)
    assert np.array_equal(degrade("mixed", clean, np.random.default_rng(seed), 0.5, reflection=glass)[0], alone)
