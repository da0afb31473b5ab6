"""`bench/growth.py`: slopes, the classification rule, and the size-only sweep on an MNIST subset."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import growth  # noqa: E402


def test_slope_is_the_log_log_exponent_and_skips_missing_points():
    assert growth.slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert growth.slope([1, 2, 4], [5, 5, float("nan")]) == pytest.approx(0.0)
    assert math.isnan(growth.slope([1, 2], [1, float("nan")]))


def test_rule_separates_forget_retain_and_fixed_budgets():
    assert growth.classify(0.9, 0.1, float("nan")) == "forget set"
    assert growth.classify(0.1, 0.9, float("nan")) == "retain set"
    assert growth.classify(0.1, 0.2, float("nan")) == "neither"
    assert growth.classify(float("nan"), 0.9, 0.7) == "forget set (class sweep)"


@pytest.mark.slow
def test_size_only_sweep_times_every_size_and_fits_the_size_slope(shared_datasets, tmp_path):
    out = tmp_path / "g.json"
    assert growth.main(["--data-root", str(shared_datasets), "--quick", "--sizes-only", "--methods", "neggrad",
                        "--epochs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["points"]) == ["size 25%", "size 50%", "size 100%"]
    assert [p["n_train"] for p in result["points"].values()] == [1000, 2000, 4000]
    slopes = result["slopes"]["retrain"]
    assert math.isnan(slopes["slope_forget_random"]) and slopes["slope_train_size"] > 0.3  # retraining grows with |D|
    assert out.with_suffix(".png").exists()


def test_sizes_from_takes_the_size_points_of_a_matching_sizes_only_run_and_refuses_others(tmp_path):
    run = {"sizes_only": True, "n_train": 60000, "recipe_epochs": 3,
           "points": {"size 25%": {"n_train": 15000}, "size 100%": {"n_train": 60000}}}
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps(run))
    assert list(growth._sizes_from(path, 60000, 3)) == ["size 25%", "size 100%"]
    with pytest.raises(SystemExit, match="not a --sizes-only run on 4000 training images"):
        growth._sizes_from(path, 4000, 3)
    path.write_text(json.dumps({**run, "sizes_only": False}))
    with pytest.raises(SystemExit, match="3-epoch recipe; not used"):
        growth._sizes_from(path, 60000, 3)


def _sweep(methods: dict[str, float], retrain: float, **extra) -> dict:
    """A complete request sweep whose methods take `factor` x retrain at every point (sizes: shared)."""
    points = {}
    for label, n_forget in (("random 1%", 600), ("random 10%", 6000), ("1 class", 6000), ("2 classes", 12000)):
        times = {"retrain": retrain, **{m: f * retrain * (n_forget / 600 if m == "grows" else 1)
                                        for m, f in methods.items()}}
        points[label] = {"n_train": 60000, "n_forget": n_forget, "times": times,
                         "runs": {k: [v] for k, v in times.items()}}
    points["size 50%"] = {"n_train": 30000, "n_forget": 3000, "times": {"retrain": 30.0, "a": 3.0, "grows": 30.0},
                          "runs": {}}
    points["size 100%"] = {"n_train": 60000, "n_forget": 6000, "times": {"retrain": 60.0, "a": 6.0, "grows": 60.0},
                           "runs": {}}
    run = {"dataset": "mnist", "model": "cnn width 16", "recipe_epochs": 3, "quick": False, "sizes_only": False,
           "sizes_from": "sizes.json", "n_train": 60000, "seeds": 1, "rule": growth.RULE, "points": points,
           "wall_s": 10.0, **extra}
    run["slopes"] = growth.fit_slopes(points, list(methods))
    return run


def test_join_keeps_each_methods_own_retrain_and_refuses_other_sweeps():
    from bench import growth_join

    joined = growth_join.join([_sweep({"a": 0.1}, retrain=60.0), _sweep({"grows": 0.5}, retrain=120.0)])
    point = joined["points"]["random 10%"]
    assert point["times"]["a"] / point["retrain_of"]["a"] == pytest.approx(0.1)
    assert point["times"]["grows"] / point["retrain_of"]["grows"] == pytest.approx(5.0)  # 0.5 x 10, its own run
    assert "0.100" in growth.report(joined, ["a", "grows"]) and "5.000" in growth.report(joined, ["a", "grows"])
    assert joined["slopes"]["grows"]["scales_with"] == "forget set"
    assert joined["slopes"]["a"]["slope_forget_random"] == pytest.approx(0.0)
    with pytest.raises(SystemExit, match="timed in two runs"):
        growth_join.join([_sweep({"a": 0.1}, 60.0), _sweep({"a": 0.2}, 60.0)])
    with pytest.raises(SystemExit, match=r"differ in \['n_train'\]"):
        growth_join.join([_sweep({"a": 0.1}, 60.0), _sweep({"grows": 0.5}, 60.0, n_train=4000)])
    with pytest.raises(SystemExit, match="partial"):
        growth_join.join([_sweep({"a": 0.1}, 60.0), _sweep({"grows": 0.5}, 60.0, partial=True)])
