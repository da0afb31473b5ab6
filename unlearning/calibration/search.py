"""The search: one Optuna study per method over its declared space, on the calibration proxies only.

TPE (seeded), a percentile pruner that stops a trial after a proxy when its running mean gap is in the
worst quarter of the trials so far at that proxy, at most `trials` trials and `budget_s` seconds of wall
time (a trial in flight finishes). The method's default setting is scored first, on the same proxies, and
told to the study when it lies inside the space. The choice: the lowest mean gap; settings within
`tie_gap` points of it are ties, broken by run time (the fastest wins). optuna is imported here only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import CalibrationConfig
from ..console import estimate_eta, format_duration
from ..methods import METHODS
from ..methods.space import Choice, Dist, IntRange, LogUniform, Uniform, describe_space
from ..params import Params
from ..training import LogFn
from .proxy_models import ProxyCase
from .trials import Score, score_on, setting_config

OPTUNA_MISSING = ("calibration needs optuna 5, which is not installed: pip install 'optuna>=5,<6' "
                  "(or `uv sync` in the project)")


def require_optuna() -> Any:
    """The optuna module, or one clear line saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(OPTUNA_MISSING) from None
    return optuna


@dataclass
class MethodSearch:
    """What the search of one method found (JSON-able through `as_dict`)."""

    method: str
    space: dict[str, str]
    values: dict[str, Any]  # the chosen setting of the searched keys
    chosen: str  # "search" or "defaults"
    gap: float
    time_s: float
    default_values: dict[str, Any]
    default_gap: float
    default_time_s: float
    trials: int  # finished trials (the scored defaults not counted)
    pruned: int
    failed: int
    wall_s: float
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per trial, for trackers
    budget_hint: str | None = None  # set when the wall-time budget cut the search short (`budget_hint`)
    # the searched choice the held-out proxy rejected (`core.calibrate_method`): values, gap, time_s, heldout_gap
    vetoed: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}


def _distribution(optuna: Any, dist: Dist) -> Any:
    d = optuna.distributions
    if isinstance(dist, LogUniform):
        return d.FloatDistribution(dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return d.FloatDistribution(dist.low, dist.high)
    if isinstance(dist, IntRange):
        return d.IntDistribution(dist.low, dist.high, log=dist.log)
    if isinstance(dist, Choice):
        return d.CategoricalDistribution(list(dist.options))
    raise TypeError(f"unknown search range {type(dist).__name__}")


def searched_space(params: Params, name: str) -> dict[str, Dist]:
    """The method's declared space minus the keys params set explicitly (those are never searched)."""
    cfg = params.unlearn.method_config(name)
    return {k: d for k, d in type(cfg).search_space.items() if k not in cfg.model_fields_set}


def _pick(candidates: list[tuple[dict[str, Any], Score, str]], tie_gap: float) -> tuple[dict[str, Any], Score, str]:
    """Lowest gap; within `tie_gap` points of it, the fastest (earlier candidates first on equal time)."""
    finite = [c for c in candidates if c[1].finite]
    if not finite:
        return candidates[0]
    best = min(c[1].gap for c in finite)
    tied = [c for c in finite if c[1].gap <= best + tie_gap]
    return min(tied, key=lambda c: c[1].time_s)


def search_method(params: Params, name: str, cases: Sequence[ProxyCase], settings: CalibrationConfig, *,
                  seed: int = 0, log: LogFn | None = None) -> MethodSearch:
    """Search `name`'s space on `cases` (the calibration proxies; never the held-out one, never the live one).

    Args:
        params: the run's params; the method's explicit settings stay fixed and are not searched.
        name: the method.
        cases: calibration proxies with their base and oracle models.
        settings: trials, budget, startup trials, tie_gap, seed.
        seed: the method seed every trial runs with.
        log: progress events (`stage: calibrate`, trial, best gap, ETA).

    Returns:
        The chosen setting, its gap and time, the defaults' gap and time, and the trial log.
    """
    optuna = require_optuna()
    emit = log or (lambda event: None)
    space = searched_space(params, name)
    if not space:
        raise ValueError(f"{name}: nothing to search ({METHODS.get(name).config.no_search})")
    dists = {k: _distribution(optuna, d) for k, d in space.items()}
    start = time.perf_counter()
    default_cfg = setting_config(params, name, {})
    defaults = {k: default_cfg.effective(cases[0].split).get(k) for k in space}
    default_score = score_on(params, name, default_cfg, cases, seed)
    emit({"stage": "calibrate", "method": name, "defaults": defaults, "gap": default_score.gap})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=settings.startup_trials),
        pruner=optuna.pruners.PercentilePruner(75.0, n_startup_trials=3, n_warmup_steps=0))
    if default_score.finite and all(space[k].contains(v) for k, v in defaults.items()):
        running = [sum(default_score.gaps[:i + 1]) / (i + 1) for i in range(len(cases) - 1)]
        study.add_trial(optuna.trial.create_trial(
            params=defaults, distributions=dists, value=default_score.gap,
            intermediate_values=dict(enumerate(running)), user_attrs={"defaults": True}))

    scores: dict[int, Score] = {}

    def objective(trial: Any) -> float:
        values = {k: _suggest(trial, k, d) for k, d in dists.items()}

        def report(i: int, mean: float) -> None:
            if i < len(cases) - 1 and math.isfinite(mean):
                trial.report(mean, i)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        score = score_on(params, name, setting_config(params, name, values), cases, seed, after_each=report)
        scores[trial.number] = score
        trial.set_user_attr("time_s", score.time_s)
        return score.gap  # nan: optuna records a failed trial

    def progress(study: Any, trial: Any) -> None:
        done = sum(1 for t in study.trials if not t.user_attrs.get("defaults"))
        elapsed = time.perf_counter() - start
        left = estimate_eta(done, settings.trials, elapsed)
        left = min(left, max(settings.budget_s - elapsed, 0.0)) if left is not None else None
        best = _best_value(study)
        emit({"stage": "calibrate", "method": name, "trial": f"{done}/{settings.trials}",
              "state": trial.state.name.lower(), "gap": trial.value, "best": best, "eta": format_duration(left)})

    remaining = settings.budget_s - (time.perf_counter() - start)
    if remaining > 0:
        study.optimize(objective, n_trials=settings.trials, timeout=remaining, callbacks=[progress],
                       catch=(ValueError, RuntimeError, FloatingPointError))
    trials = [t for t in study.trials if not t.user_attrs.get("defaults")]
    states = [t.state.name for t in trials]
    candidates = [(defaults, default_score, "defaults")]
    candidates += [(dict(t.params), scores[t.number], "search") for t in trials
                   if t.state.name == "COMPLETE" and t.number in scores]
    values, score, chosen = _pick(candidates, settings.tie_gap)
    found = MethodSearch(
        name, describe_space(space), values, chosen, score.gap, score.time_s, defaults, default_score.gap,
        default_score.time_s, states.count("COMPLETE"), states.count("PRUNED"), states.count("FAIL"),
        time.perf_counter() - start,
        [{"number": t.number, "params": dict(t.params), "state": t.state.name.lower(), "value": t.value,
          "time_s": t.user_attrs.get("time_s"), "intermediate": dict(t.intermediate_values)} for t in trials])
    found.budget_hint = budget_hint(found, settings)
    return found


def _suggest(trial: Any, key: str, dist: Any) -> Any:
    """One value of `dist` (an optuna distribution) for `trial`."""
    kind = type(dist).__name__
    if kind == "FloatDistribution":
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    if kind == "IntDistribution":
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(key, dist.choices)


def _best_value(study: Any) -> float | None:
    done = [t.value for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    return min(done) if done else None


def budget_hint(search: MethodSearch, settings: CalibrationConfig) -> str | None:
    """A line when the wall-time budget, not `trials`, ended a search before TPE could start (fewer trials
    than `startup_trials`): such a search mostly keeps the defaults, and nothing else says why. The cost of a
    trial is estimated from this search (its wall time over the trials run plus the defaults' scoring)."""
    ran = search.trials + search.pruned + search.failed
    if ran >= min(settings.trials, settings.startup_trials) or search.wall_s < settings.budget_s:
        return None
    per_trial = search.wall_s / (ran + 1)
    return (f"{search.method}: the {settings.budget_s:g} s budget stopped the search after {ran} of "
            f"{settings.trials} trials (about {per_trial:.0f} s each); calibration.budget_s="
            f"{math.ceil(per_trial * (settings.trials + 1) / 10) * 10:.0f} would fit them all")
