"""Promotion gates: pass/fail of one unlearned model against the base model and the oracle (points).

With an oracle: forget_acc_vs_oracle, mia_vs_oracle, retain_acc_drop, test_acc_drop. Without one
(evaluate.oracle: false), oracle-free gates replace the oracle ones (see `unlearning.config.Gates`, the
one set of defaults). Gates on the forget set are never finer than one forget sample (100 / n_forget
points). "Test accuracy" is the accuracy on test samples of the kept classes when the request forgets
classes (the full test set contains the forgotten class, on which every good unlearner must fail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unlearning.config import Gates

@dataclass
class Gate:
    name: str
    value: float  # points
    limit: float
    passed: bool
    text: str

    @property
    def tag(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'} {self.text}"


def _test_key(metrics: dict[str, float]) -> str:
    return "retain_test/acc" if "retain_test/acc" in metrics else "test/acc"


FORGET_SET_GATES = ("forget_acc_vs_oracle", "mia_vs_oracle", "forget_acc_vs_test")


def check_gates(metrics: dict[str, float], base: dict[str, float], oracle: dict[str, float] | None,
                gates: Gates, *, scenario: str, mia_key: str = "mia/entropy_lr",
                n_forget: int | None = None) -> list[Gate]:
    """Evaluate the promotion gates of one unlearned model.

    Gates measured on the forget set cannot be finer than one forget sample: with 20 forgotten ids one
    sample is 5 points, so a 2-point limit would demand an exact match. Their limit is raised to
    100 / n_forget where that is larger (the tag says so).

    Args:
        metrics: the unlearned model's metrics (fractions).
        base: the base (original) model's metrics.
        oracle: the oracle's metrics, or None without an oracle.
        gates: `promote.gates` (points; validated at load, so every name is known).
        scenario: the split's scenario (class, subclass, random, ids, range).
        mia_key: the entropy MIA metric name (`mia/entropy_lr` or `mia/entropy_svc`).
        n_forget: size of the forget set (sets the resolution of the forget-set gates).

    Returns:
        One `Gate` per applicable gate; a missing or non-finite metric fails its gate.
    """
    limits = gates.limits()
    pts = lambda x: 100.0 * x  # noqa: E731
    out: list[Gate] = []

    def add(name: str, value: float | None, what: str, relation: str = "<=") -> None:
        if name not in limits:
            return
        limit, note = float(limits[name]), ""
        if name in FORGET_SET_GATES and n_forget and 100.0 / n_forget > limit:
            limit, note = 100.0 / n_forget, f" (limit {limits[name]:g} raised to one of {n_forget} forget samples)"
        if value is None or not math.isfinite(value):
            out.append(Gate(name, float("nan"), limit, False, f"{what}: metric missing"))
            return
        ok = value <= limit + 1e-4  # metrics pass through float32: 1 - 0.95 can be 5.0000012 points
        out.append(Gate(name, value, limit, ok, f"{value:.2f} {relation if ok else '>'} {limit:.3g}{note}"))

    def get(d: dict[str, float] | None, key: str) -> float | None:
        v = (d or {}).get(key)
        return float(v) if isinstance(v, int | float) else None

    def diff(a: float | None, b: float | None, absolute: bool = False) -> float | None:
        if a is None or b is None:
            return None
        return abs(pts(a - b)) if absolute else pts(a - b)

    tk = _test_key(metrics)
    if oracle is not None:
        add("forget_acc_vs_oracle", diff(get(metrics, "forget/acc"), get(oracle, "forget/acc"), True),
            "|forget acc - oracle|")
        add("mia_vs_oracle", diff(get(metrics, mia_key), get(oracle, mia_key), True), "|MIA - oracle|")
    else:
        if scenario in ("class", "subclass"):
            fa, mia = get(metrics, "forget/acc"), get(metrics, mia_key)
            add("forget_acc_max", pts(fa) if fa is not None else None, "forget acc")
            add("mia_max", pts(mia) if mia is not None else None, "MIA member rate")
        else:
            # Forgotten samples should look unseen. No MIA gate here: on well-generalising data the retrain
            # oracle itself scores high (digits, 20 ids: entropy MIA 0.90 for the oracle, 0.85 original).
            add("forget_acc_vs_test", diff(get(metrics, "forget/acc"), get(metrics, "test/acc")),
                "forget acc - test acc")
    add("retain_acc_drop", diff(get(base, "retain/acc"), get(metrics, "retain/acc")), "retain acc drop")
    add("test_acc_drop", diff(get(base, tk), get(metrics, tk)), "test acc drop")
    return out


def score(metrics: dict[str, float], results: list[Gate]) -> float:
    """Lower is better: the average gap to the oracle, else the mean share of each gate's limit used."""
    gap = metrics.get("oracle/avg_gap")
    if isinstance(gap, int | float) and math.isfinite(gap):
        return float(gap)
    used = [max(g.value, 0.0) / g.limit if g.limit > 0 else g.value for g in results if math.isfinite(g.value)]
    return sum(used) / len(used) if used else float("inf")
