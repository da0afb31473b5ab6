"""Intervals: t over training-seed means, t over unlearning seeds with one base, bootstrap for one model."""

from __future__ import annotations

import math

import pytest

from unlearning.stats import binomial_sd, bootstrap_rate, half_width, summarize, t_interval


def test_t_interval_is_mean_plus_minus_t_times_standard_error():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert math.isclose((lo + hi) / 2, 2.0)
    assert math.isclose((hi - lo) / 2, 4.302653 / math.sqrt(3), rel_tol=1e-5)  # t(0.975, 2 df) * s / sqrt(n)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])


def test_bootstrap_of_a_rate_matches_the_binomial_spread_and_is_reproducible():
    lo, hi = bootstrap_rate(0.5, 400)
    assert 0.44 < lo < 0.46 and 0.54 < hi < 0.56  # ±1.96 * 0.025
    assert bootstrap_rate(0.5, 400) == (lo, hi)
    assert bootstrap_rate(0.0, 50) == (0.0, 0.0)


def test_binomial_sd_keeps_half_a_sample_of_resolution_at_the_edges():
    assert math.isclose(binomial_sd(0.5, 100), 0.05)
    assert math.isclose(binomial_sd(0.0, 100), binomial_sd(1.0, 100)) and binomial_sd(0.0, 100) > 0


def test_runs_are_averaged_per_training_seed_before_the_interval():
    runs = [{"training_seed": 0, "seed": 0, "acc": 0.80}, {"training_seed": 0, "seed": 1, "acc": 0.90},
            {"training_seed": 1, "seed": 0, "acc": 0.70}, {"training_seed": 1, "seed": 1, "acc": 0.70}]
    out = summarize(runs)
    assert math.isclose(out["acc"], 0.775) and out["n_seeds"] == 4
    assert out["ci"]["acc"] == pytest.approx(list(t_interval([0.85, 0.70])))  # 2 means, 1 df
    assert "training_seed" not in out and "seed" not in out


def test_one_base_gives_an_interval_over_its_unlearning_seeds():
    runs = [{"training_seed": 0, "seed": s, "acc": v} for s, v in enumerate([0.8, 0.9, 0.85])]
    assert summarize(runs)["ci"]["acc"] == pytest.approx(list(t_interval([0.8, 0.9, 0.85])))


def test_one_model_gets_a_bootstrap_for_rates_and_no_interval_otherwise():
    out = summarize([{"forget/acc": 0.5, "oracle/js": 0.2, "bad": float("nan")}], {"forget/acc": 400})
    assert out["ci"]["forget/acc"] == pytest.approx(list(bootstrap_rate(0.5, 400)))
    assert "oracle/js" not in out["ci"] and "bad" not in out["ci"] and math.isnan(out["bad"])
    assert half_width(out["ci"]["forget/acc"]) == pytest.approx(0.05, abs=0.006)
    assert half_width(None) is None and half_width([0.1, float("nan")]) is None


def test_ci_metrics_are_flat_names_for_a_metrics_store():
    from unlearning.stats import ci_metrics

    out = ci_metrics(summarize([{"forget/acc": 0.5}], {"forget/acc": 400}), "band/")
    assert set(out) == {"band/forget/acc/ci_low", "band/forget/acc/ci_high"}
    assert out["band/forget/acc/ci_low"] < 0.5 < out["band/forget/acc/ci_high"]
