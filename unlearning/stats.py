"""Confidence intervals of metrics: a t interval over seeds, or for one model a bootstrap over samples.

Training seeds and unlearning seeds are not exchangeable. By Lanyon et al. (2025) the variance of a
method's mean is σ²_train/I + σ²_unlearn/(I·J) for I training seeds (a base model each) and J unlearning
seeds per base: more unlearning seeds cannot remove the training-seed term. So runs are first averaged
per training seed and the t interval is taken over those I means; with a single training seed it is taken
over the J runs (and then says nothing about σ²_train). A single model gets the percentile bootstrap over
its samples for rates and accuracies, which for a mean of 0/1 outcomes is a binomial draw per resample
(the same distribution, without materialising the resamples); other metrics of one model get no interval.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as scipy_stats  # a dependency of scikit-learn itself

LEVEL = 0.95
BOOTSTRAP_DRAWS = 4000
if TYPE_CHECKING:
    from .requests import Split

SEED_KEYS = ("training_seed", "seed")  # run labels, not metrics


def t_quantile(df: int, level: float = LEVEL) -> float:
    """Two-sided Student t quantile for `df` degrees of freedom (the normal one for df <= 0 is never used)."""
    return float(scipy_stats.t.ppf(0.5 + level / 2, df))


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Mean ± t·s/√n over at least two values."""
    if len(values) < 2:
        raise ValueError(f"a t interval needs at least 2 values; got {len(values)}")
    mean, half = statistics.fmean(values), t_quantile(len(values) - 1, level) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean - half, mean + half


def bootstrap_rate(rate: float, n: int, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a rate measured on `n` samples (resampling those samples)."""
    if n < 1:
        raise ValueError(f"'n' must be >= 1; got {n}")
    draws = np.random.default_rng(seed).binomial(n, min(max(rate, 0.0), 1.0), BOOTSTRAP_DRAWS) / n
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def binomial_sd(rate: float, n: int) -> float:
    """Standard deviation of a rate over `n` samples; the rate is kept half a sample away from 0 and 1, so
    a rate that happens to be exact (forget acc 0) still has the resolution of one sample."""
    p = min(max(rate, 0.5 / n), 1.0 - 0.5 / n)
    return math.sqrt(p * (1.0 - p) / n)


def rate_sizes(split: Split) -> dict[str, int]:
    """How many samples each rate metric of `split` counts over.

    Accuracies count over their set; the entropy MIA and MIA-efficacy count forget samples predicted
    member (non-member). Metrics absent here (losses, divergences, CV attack accuracies) are not rates.
    """
    forget = len(split.forget_idx)
    sizes = {"forget/acc": forget, "retain/acc": len(split.retain_idx), "test/acc": len(split.test_idx),
             "mia/entropy_lr": forget, "mia/entropy_svc": forget, "mia/efficacy": forget,
             "mia/regression_svc": min(forget, 2000)}
    if split.forget_test_mask is not None:
        n = int(split.forget_test_mask.sum())
        if n:
            sizes["forget_test/acc"] = n
        if len(split.test_idx) - n:
            sizes["retain_test/acc"] = len(split.test_idx) - n
    return sizes


def per_training_seed(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """The finite values of `key`, averaged within each training seed (runs without one are their own group)."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for i, run in enumerate(runs):
        value = run.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            groups[run.get("training_seed", f"run{i}")].append(float(value))
    return [statistics.fmean(v) for v in groups.values()]


def summarize(runs: Sequence[Mapping[str, Any]], sizes: Mapping[str, int] | None = None,
              level: float = LEVEL) -> dict[str, Any]:
    """Means over runs, with `ci: {key: [low, high]}` and `n_seeds` (the number of runs).

    Args:
        runs: one metric dict per run, each optionally labelled with `training_seed` and `seed`.
        sizes: samples behind each rate metric (`rate_sizes`), for the one-run bootstrap.
        level: confidence level of the intervals.

    Returns:
        `{key: mean, ..., "ci": {key: [low, high]}, "n_seeds": len(runs)}`; a key whose values are all
        nan has mean nan and no interval.
    """
    if not runs:
        raise ValueError("summarize needs at least one run")
    keys = [k for k in dict.fromkeys(k for r in runs for k in r) if k not in SEED_KEYS
            and any(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for r in runs)]
    out: dict[str, Any] = {}
    ci: dict[str, list[float]] = {}
    for key in keys:
        finite = [float(r[key]) for r in runs if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        out[key] = statistics.fmean(finite) if finite else float("nan")
        if not finite:
            continue
        groups = per_training_seed(runs, key)
        if len(groups) >= 2:
            ci[key] = list(t_interval(groups, level))
        elif len(finite) >= 2:
            ci[key] = list(t_interval(finite, level))
        elif sizes and key in sizes:
            ci[key] = list(bootstrap_rate(out[key], sizes[key], level))
    out["ci"] = ci
    out["n_seeds"] = len(runs)
    return out


def half_width(ci: Sequence[float] | None) -> float | None:
    """Half the width of an interval (for `mean ± half` display), None without one."""
    if not ci or len(ci) != 2 or not all(isinstance(v, int | float) and math.isfinite(v) for v in ci):
        return None
    return (ci[1] - ci[0]) / 2.0


def ci_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """`<prefix><metric>/ci_low` and `/ci_high` of a `summarize` output: flat names for a metrics store."""
    out: dict[str, float] = {}
    for key, (lo, hi) in (summary.get("ci") or {}).items():
        if math.isfinite(lo) and math.isfinite(hi):
            out[f"{prefix}{key}/ci_low"], out[f"{prefix}{key}/ci_high"] = float(lo), float(hi)
    return out
