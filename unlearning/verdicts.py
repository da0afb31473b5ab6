"""Promotion gates calibrated against retraining: each gate says pass, fail or inconclusive.

Retraining is the gold standard, so a gate must let a retrain with a fresh seed through and stop a model
that still holds the forget set. A fixed limit cannot do both when the data are noisy: on digits class 3
the entropy-MIA member rate of 146 forget samples moves by about 3 points between retrains, more than
half the 5-point limit. So each gate is decided against the spread of the retrained models (the oracles
trained with `evaluate.training_seeds`), and the configured limit is the tolerance where the data are
precise enough to honour it.

The rule, in points, for a gated quantity x (a rate: forget acc, MIA member rate, retain or test acc):

    s_R = spread of x over the retrained models, never below the binomial noise of one model
          on the n samples x counts (one retrain gives no spread; the floor stands in for it)
    τ   = where a method that behaves like retraining lands: s_R·√(1/I + 1/K) for a method run on I
          base models, against the mean of K retrains (the pipeline: I = 1)
    σ   = this method's own uncertainty: s_R² (the training-seed variance, taken from the retrains
          when it ran on one base) + s_U²/J over its J unlearning seeds, or the spread of its per-base
          means / I over I bases; plus s_R²/K for the retrains' mean
    d   = method − retrain mean (two-sided gates), or base − method (drop gates, one-sided)
    T   = max(limit, 2.5 τ): where 99 % of fresh retrains land, or the limit when it is looser
          (drop gates add the drop that retraining itself shows)
    pass          d within T, and σ at most 1.5 τ (not much noisier over its seeds than retraining)
    fail          d beyond T even at the near end of its 95 % interval (d ∓ 1.96 σ)
    inconclusive  otherwise: d beyond T with its interval reaching back inside, or d within T on a
                  method too noisy over its seeds to tell; more seeds or samples would settle it

For one model on one base (what the pipeline gates) σ equals τ, so the rule is: pass within 2.5 τ,
fail beyond 2.5 τ + 1.96 τ, inconclusive between.

On sample requests (random, ids) the rates above cannot see whether a model still holds the forget set:
one model's rates vary more than the original's lead over retraining. There `membership_vs_oracle`
holds the paired membership shift (`metrics.membership`: each forget sample against itself under the
retrains, in clipped log-odds, not points) to the same rule, with τ measured from the retrains per sample.

Measured rates of the rule (bench/gate_calibration.py, digits, 20 trials each) are in the README.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .stats import binomial_sd, per_training_seed

if TYPE_CHECKING:
    from .config import Gates

Z_RETRAIN = 2.5  # two-sided 98.8 %: where a fresh retrain's difference lands
Z_CI = 1.96  # the reported 95 % interval of a difference
NOISY = 1.5  # a method whose uncertainty exceeds this many times retraining's is inconclusive, not passed
VERDICTS = ("pass", "fail", "inconclusive")
FORGET_SET_GATES = ("forget_acc_vs_oracle", "mia_vs_oracle", "forget_acc_vs_test")
SAMPLE_SCENARIOS = ("random", "ids")  # the forget set is drawn like the retain set: membership is per sample
LOG_ODDS_GATES = ("membership_vs_oracle",)  # measured in log-odds; every other gate in points


def gate_digits(name: str) -> int:
    """Decimals to show a gate's value with: log-odds gates live around 0.1, points around 1-10."""
    return 2 if name in LOG_ODDS_GATES else 1


@dataclass(frozen=True)
class GateVerdict:
    """One gate's decision; every number in points (0-100)."""

    name: str
    value: float  # the difference (vs the retrain mean), the drop, or the rate itself (oracle-free gates)
    ci: tuple[float, float]
    limit: float  # as configured
    threshold: float  # what the value was held to: max(limit, the retrain band, one forget sample)
    verdict: str  # pass | fail | inconclusive
    reason: str

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def tag(self) -> str:
        """`pass |Δ| 1.2 ≤ 7.4 ...`: the MLflow tag and table cell."""
        return f"{self.verdict} {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def overall(verdicts: Sequence[GateVerdict]) -> str:
    """A model's verdict: fail if any gate fails, pass if all pass, else inconclusive (never promoted)."""
    if not verdicts:
        return "inconclusive"
    if any(v.verdict == "fail" for v in verdicts):
        return "fail"
    return "pass" if all(v.passed for v in verdicts) else "inconclusive"


def score(metrics: Mapping[str, Any], verdicts: Sequence[GateVerdict]) -> float:
    """Lower is better: the average gap to the oracle, else the mean share of each gate's threshold used."""
    gap = metrics.get("oracle/avg_gap")
    if isinstance(gap, int | float) and math.isfinite(gap):
        return float(gap)
    used = [abs(v.value) / v.threshold if v.threshold > 0 else abs(v.value) for v in verdicts
            if math.isfinite(v.value)]
    return sum(used) / len(used) if used else float("inf")


def _values(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


def _method_variance(runs: Sequence[Mapping[str, Any]], key: str, retrain_sd: float, floor: float) -> float:
    """Variance of the method's mean (fractions²): measured over bases when there are several, else the
    retrains' training-seed variance plus the spread over its unlearning seeds."""
    bases = per_training_seed(runs, key)
    if len(bases) >= 2:
        return max(statistics.variance(bases), floor ** 2) / len(bases)
    values = _values(runs, key)
    unlearn = statistics.variance(values) / len(values) if len(values) >= 2 else 0.0
    return retrain_sd ** 2 + unlearn


def _decide(name: str, d: float, sigma: float, tau: float | None, limit: float, threshold: float,
            two_sided: bool, what: str, note: str) -> GateVerdict:
    lo, hi = d - Z_CI * sigma, d + Z_CI * sigma
    shown = abs(d) if two_sided else d
    near = (min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0) if two_sided else lo
    ci_text = f"95% CI {lo:+.1f} to {hi:+.1f}"
    settle = "; more seeds (evaluate.seeds, evaluate.training_seeds) or more forget samples would settle it"
    # A method much noisier over its seeds than retraining is (sigma > 1.5 tau) cannot pass on its mean alone.
    noisy = tau is not None and sigma > NOISY * tau + 1e-9
    if shown <= threshold + 1e-4 and not noisy:  # float32 metrics: 1 - 0.95 can be 5.0000012 points
        verdict, text = "pass", f"{what} {shown:.2f} <= {threshold:.3g} ({ci_text}){note}"
    elif near > threshold:
        verdict, text = "fail", f"{what} {shown:.2f} > {threshold:.3g} across its {ci_text}{note}"
    elif shown <= threshold + 1e-4:
        verdict, text = "inconclusive", (f"{what} {shown:.2f} <= {threshold:.3g} but it varies over its seeds "
                                         f"{sigma / tau:.1f}x as much as retraining ({ci_text}){note}{settle}")
    else:
        verdict, text = "inconclusive", (f"{what} {shown:.2f} > {threshold:.3g} but its {ci_text} reaches "
                                         f"back inside{note}{settle}")
    return GateVerdict(name, d, (lo, hi), limit, threshold, verdict, text)


def decide_gates(method: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
                 oracle: Sequence[Mapping[str, Any]] | None, gates: Gates, *, scenario: str,
                 sizes: Mapping[str, int], mia_key: str = "mia/entropy_lr") -> list[GateVerdict]:
    """Decide every applicable gate of one method.

    Args:
        method: the method's runs (metric dicts, fractions), labelled with `training_seed` / `seed`.
        base: the base model's runs (one per training seed).
        oracle: the retrained models' runs (one per training seed), or None without an oracle.
        gates: `promote.gates` (points; validated at load).
        scenario: the split's scenario (class, subclass, random, ids, range).
        sizes: samples behind each rate (`unlearning.stats.rate_sizes`).
        mia_key: the entropy MIA metric (`mia/entropy_lr` or `mia/entropy_svc`).

    Returns:
        One `GateVerdict` per switched-on gate that applies; a missing metric is inconclusive.
    """
    limits = gates.limits()
    out: list[GateVerdict] = []
    test_key = "retain_test/acc" if any("retain_test/acc" in r for r in method) else "test/acc"
    n_forget = sizes.get("forget/acc")

    def gate(name: str, key: str, kind: str, what: str) -> None:
        if name not in limits:
            return
        limit = float(limits[name])
        m, ref = _values(method, key), _values(oracle or [], key)
        b = _values(base, key)
        needs = [m, b] if kind == "drop" else [m] + ([ref] if kind == "vs_oracle" else [])
        if not all(needs) or key not in sizes:
            out.append(GateVerdict(name, math.nan, (math.nan, math.nan), limit, limit, "inconclusive",
                                   f"{what}: metric {key} missing"))
            return
        n = sizes[key]
        center = statistics.fmean(ref) if ref else statistics.fmean(b)
        floor = binomial_sd(center, n)
        retrain_sd = max(statistics.stdev(ref), floor) if len(ref) >= 2 else floor
        var = _method_variance(method, key, retrain_sd, floor)
        resolution, note = 0.0, ""
        if name in FORGET_SET_GATES and n_forget and 100.0 / n_forget > limit:
            resolution, note = 100.0 / n_forget, f"; limit {limit:g} raised to one of {n_forget} forget samples"
        mean_m = statistics.fmean(m)
        # tau: how far a method that behaves like retraining would land, on as many bases as this one ran on;
        # it sets the band. sigma: this method's own uncertainty; it sets the interval.
        n_bases = max(len(per_training_seed(method, key)), 1)
        tau = 100.0 * retrain_sd * math.sqrt(1.0 / n_bases + 1.0 / len(ref)) if ref else None
        sigma = 100.0 * math.sqrt(var + (retrain_sd ** 2 / len(ref) if ref else 0.0))
        if kind == "vs_oracle":
            d = 100.0 * (mean_m - statistics.fmean(ref))
            band = Z_RETRAIN * tau
        elif kind == "drop":
            d = 100.0 * (statistics.fmean(b) - mean_m)
            # Retraining is allowed whatever it loses itself: its mean drop plus where 99 % of retrains land.
            band = (100.0 * (statistics.fmean(b) - statistics.fmean(ref)) + Z_RETRAIN * tau) if ref else 0.0
        else:  # oracle-free: the rate itself against the limit
            d, band = 100.0 * mean_m, 0.0
            if kind == "vs_test":
                d -= 100.0 * statistics.fmean(_values(method, "test/acc") or [mean_m])
        threshold = max(limit, band, resolution)
        if band > max(limit, resolution):
            note += f"; limit {limit:g} < retrain spread"
        out.append(_decide(name, d, sigma, tau, limit, threshold, kind == "vs_oracle", what, note))

    if oracle:
        gate("forget_acc_vs_oracle", "forget/acc", "vs_oracle", "|forget acc - retrain|")
        gate("mia_vs_oracle", mia_key, "vs_oracle", "|MIA - retrain|")
        if scenario in SAMPLE_SCENARIOS and "membership_vs_oracle" in limits:
            out.append(_membership_gate(method, float(limits["membership_vs_oracle"])))
    elif scenario in ("class", "subclass"):
        gate("forget_acc_max", "forget/acc", "max", "forget acc")
        gate("mia_max", mia_key, "max", "MIA member rate")
    else:
        gate("forget_acc_vs_test", "forget/acc", "vs_test", "forget acc - test acc")
    gate("retain_acc_drop", "retain/acc", "drop", "retain acc drop")
    gate("test_acc_drop", test_key, "drop", "test acc drop")
    return out


def _membership_gate(method: Sequence[Mapping[str, Any]], limit: float) -> GateVerdict:
    """The paired membership shift against the band (log-odds): d is the method's mean shift (a retrain's is
    ~0); τ_1, the band's noise for one model, is s·√(1 + 1/K), so a method on I bases lands within
    s·√(1/I + 1/K); its own uncertainty is measured like the rates' (`_method_variance`)."""
    name, what = "membership_vs_oracle", "|membership shift - retrain|"
    shifts, taus = _values(method, "membership/shift"), _values(method, "membership/tau")
    if not shifts or not taus:
        return GateVerdict(name, math.nan, (math.nan, math.nan), limit, limit, "inconclusive",
                           f"{what}: no membership/shift (it needs two or more retrains: evaluate.training_seeds)")
    tau1 = statistics.fmean(taus)
    k = statistics.fmean(_values(method, "membership/k") or [2.0])  # retrains in the band
    s2 = tau1 ** 2 * k / (k + 1)  # one model's own variance: τ_1² = s²(1 + 1/K)
    bases = max(len(per_training_seed(method, "membership/shift")), 1)
    tau = math.sqrt(s2 / bases + s2 / k)
    sigma = math.sqrt(_method_variance(method, "membership/shift", math.sqrt(s2), 0.0) + s2 / k)
    d = statistics.fmean(shifts)
    threshold = max(limit, Z_RETRAIN * tau)
    note = f"; limit {limit:g} < retrain spread" if Z_RETRAIN * tau > limit else ""
    return _decide(name, d, sigma, tau, limit, threshold, True, what, note)


def noise_notes(base: Sequence[Mapping[str, Any]], oracle: Sequence[Mapping[str, Any]], gates: Gates, *,
                scenario: str, sizes: Mapping[str, int], mia_key: str = "mia/entropy_lr") -> list[str]:
    """The limits finer than retraining's own spread on this data: one line each, said as soon as the
    retrained models are measured (before any method runs).

    The band is the threshold a single model on one base is held to (the widest case): the gates of a
    model that looks exactly like the retrains' mean.
    """
    if not oracle:
        return []
    keys = {k for r in oracle for k, v in r.items() if isinstance(v, int | float)}
    like = {"training_seed": "band", **{k: statistics.fmean(_values(oracle, k)) for k in keys if _values(oracle, k)}}
    out = []
    for v in decide_gates([like], base, oracle, gates, scenario=scenario, sizes=sizes, mia_key=mia_key):
        if v.threshold > v.limit + 1e-9 and math.isfinite(v.threshold):
            unit = "log-odds" if v.name in LOG_ODDS_GATES else "points"
            out.append(f"{v.name}: limit {v.limit:g} {unit} is finer than retraining's own spread on this data "
                       f"(a retrained model lands within {v.threshold:.1f}); models are held to that instead")
    return out
