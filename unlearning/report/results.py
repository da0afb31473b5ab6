"""Tolerant reading of a results dict (what `python -m unlearning --out` writes) for the report.

Results files come from several versions of the runner: every key beyond `request`, `original` and
`methods` may be missing, and NaN arrives as null. Everything here returns None or an empty list
instead of raising, so one odd entry costs one cell of the report, never the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ORIGINAL_COLOUR = "#6e7781"
ORACLE_COLOUR = "#24292f"
# Distinct, print-safe hues for methods, in order of appearance (cycled when there are more methods).
PALETTE = ("#1f6fd1", "#d62d20", "#2e9e44", "#8a4fd8", "#e07b00", "#0f9aa5", "#d4459b", "#8c6d1f", "#6b8e23",
           "#1b2f80", "#c9a100", "#9e1f63")

CLASSIFICATION_KEYS = ("forget/acc", "retain/acc", "test/acc", "forget_test/acc", "mia/entropy_lr",
                       "mia/entropy_svc", "mia/efficacy", "zrf")
REGRESSION_KEYS = ("forget/mae", "retain/mae", "test/mae", "forget_test/mae", "mia/regression_svc")
# Quality axis of the cost plot: the first of these that the methods report (lower is better).
GAP_KEYS = ("oracle/avg_gap", "oracle/w1")


@dataclass
class Model:
    """One scored model of the run: the original, the oracle or an unlearning method."""

    name: str  # key in results: "original", "oracle" or the method's name
    label: str  # what the reader sees
    metrics: Mapping[str, Any]
    colour: str
    is_method: bool = False
    runs: list[Mapping[str, Any]] = field(default_factory=list)


def number(value: Any) -> float | None:
    """A finite float, or None for null, NaN, inf, booleans and anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def value(metrics: Mapping[str, Any], key: str) -> float | None:
    return number(metrics.get(key))


def interval(metrics: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The 95 % CI of `key` as (low, high), when the results hold one."""
    ci = metrics.get("ci")
    pair = ci.get(key) if isinstance(ci, Mapping) else None
    if not isinstance(pair, Sequence) or len(pair) != 2:
        return None
    lo, hi = number(pair[0]), number(pair[1])
    return (min(lo, hi), max(lo, hi)) if lo is not None and hi is not None else None


def request(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """The forget request's summary (dataset, sizes, hash, scenario), empty when absent."""
    found = results.get("request")
    return found if isinstance(found, Mapping) else {}


def row(results: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The metrics of "original" or "oracle", empty when absent."""
    found = results.get(name)
    return found if isinstance(found, Mapping) else {}


def models(results: Mapping[str, Any]) -> list[Model]:
    """Original, oracle (when present) and every method that ran, in the order the run listed them."""
    out = []
    for name, label, colour in (("original", "original", ORIGINAL_COLOUR),
                                ("oracle", "oracle (retrain)", ORACLE_COLOUR)):
        row = results.get(name)
        if isinstance(row, Mapping):
            out.append(Model(name, label, row, colour, runs=_runs(row)))
    for i, (name, row) in enumerate(methods(results).items()):
        out.append(Model(name, name, row, PALETTE[i % len(PALETTE)], is_method=True, runs=_runs(row)))
    return out


def methods(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The methods that produced a model (skipped ones excluded)."""
    found = results.get("methods")
    if not isinstance(found, Mapping):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, Mapping) and not v.get("skipped")}


def skipped(results: Mapping[str, Any]) -> dict[str, str]:
    """Skipped methods and why."""
    found = results.get("methods")
    if not isinstance(found, Mapping):
        return {}
    return {str(k): str(v["skipped"]) for k, v in found.items() if isinstance(v, Mapping) and v.get("skipped")}


def _runs(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    runs = row.get("runs")
    return [r for r in runs if isinstance(r, Mapping)] if isinstance(runs, list) else []


def gates(results: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    """The gate records of one method (empty when the run checked none)."""
    found = results.get("gates")
    found = found.get(method) if isinstance(found, Mapping) else None
    return [g for g in found if isinstance(g, Mapping) and isinstance(g.get("name"), str)] if isinstance(found, list) else []


def verdict(results: Mapping[str, Any], method: str) -> str | None:
    """The overall verdict of one method: "pass", "fail", "inconclusive" or None."""
    found = results.get("verdicts")
    found = found.get(method) if isinstance(found, Mapping) else None
    return str(found) if found else None


def is_regression(results: Mapping[str, Any]) -> bool:
    """Regression results report `*/mae` where classification reports `*/acc`."""
    return any(str(k).endswith("/mae") for m in models(results) for k in m.metrics)


def key_metrics(results: Mapping[str, Any]) -> list[str]:
    """The headline metrics that at least one model of the run reports."""
    keys = REGRESSION_KEYS if is_regression(results) else CLASSIFICATION_KEYS
    present = [k for k in keys if any(value(m.metrics, k) is not None for m in models(results))]
    # Only one entropy MIA is fitted per run (LR or SVC); show whichever exists.
    return [k for k in present if k != "mia/entropy_svc" or "mia/entropy_lr" not in present]


def gap_key(results: Mapping[str, Any]) -> str | None:
    """The quality-to-oracle metric that the methods report, lower is better."""
    rows = methods(results).values()
    return next((k for k in GAP_KEYS if any(value(r, k) is not None for r in rows)), None)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (speedup: higher is better, gap: lower is better), by increasing speedup.

    A point is dominated when another is at least as fast and at least as close to the oracle, and strictly
    better in one of the two.
    """
    def dominated(s: float, g: float) -> bool:
        return any(s2 >= s and g2 <= g and (s2 > s or g2 < g) for s2, g2 in points.values())

    return sorted((n for n, (s, g) in points.items() if not dominated(s, g)), key=lambda n: points[n][0])
