"""`calibrate`: search each method on proxy requests, score the choice on a held-out proxy, write the profile.

Honest by construction: the live request enters only `build_universe`, which keeps its ids and test / val
ids and copies the training tensors at the universe's ids; proxies, proxy models, the search and the
held-out scoring see only the universe. Scoring on the live request is a separate step
(`unlearning.calibration.live.score_live`) that takes the finished, frozen result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..methods import METHODS
from ..params import Params
from ..requests import Split
from ..training import LogFn
from .profile import method_fingerprint, new_profile, profile_key, profile_path, read_profile, write_profile
from .proxies import ProxyRequest, draw_proxies
from .proxy_models import ProxyCase, ProxyModels
from .search import MethodSearch, require_optuna, search_method, searched_space
from .trials import score_on, setting_config
from .universe import Universe, build_universe


@dataclass(frozen=True)
class CalibrationResult:
    """The frozen outcome of `calibrate`: per-method searches, held-out scores, skips and the profile."""

    searches: dict[str, MethodSearch]
    heldout: dict[str, dict[str, float]]  # method -> {"gap", "default_gap"} on the held-out proxy
    skipped: dict[str, str]
    profile: dict[str, Any]
    path: Path | None
    proxies: list[dict[str, Any]] = field(default_factory=list)  # calibration proxies, then the held-out one

    def values(self) -> dict[str, dict[str, Any]]:
        """Method -> the setting the profile gives (empty when the defaults won)."""
        return {m: dict(e.get("values") or {}) for m, e in self.profile["methods"].items() if m in self.searches}


def skip_reason(params: Params, name: str, scenario: str, task: str) -> str | None:
    """Why `name` cannot be calibrated for this request, or None when it can."""
    info = METHODS.get(name)
    if not info.config.search_space:
        return info.config.no_search
    if task not in info.tasks:
        return f"does not support {task} tasks"
    if scenario not in info.scenarios:
        return f"does not support {scenario!r} requests; it supports {sorted(info.scenarios)}"
    if not searched_space(params, name):
        return f"params set every searched setting ({sorted(info.config.search_space)}); they always win"
    return None


def plan_methods(params: Params, live: Split, methods: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The methods to search and the skipped ones with why. Methods named explicitly must be searchable."""
    explicit = methods is not None
    names = list(methods if explicit else (params.calibration.methods or params.unlearn.methods))
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; available: {METHODS.names()}")
    skipped = {n: r for n in names if (r := skip_reason(params, n, live.scenario, live.dataset.task))}
    if explicit and skipped:
        name, why = next(iter(skipped.items()))
        raise ValueError(f"cannot calibrate {name!r}: {why}")
    todo = [n for n in names if n not in skipped]
    if not todo:
        raise ValueError(f"no method to calibrate: {skipped}")
    return todo, skipped


@dataclass(frozen=True)
class CalibrationPlan:
    """What a calibration searches: a pure function of params, the live split's ids, the data version and the
    other requests' ids, so a worker that rebuilds it from the same inputs gets the same proxies."""

    todo: list[str]
    skipped: dict[str, str]
    key: dict[str, Any]
    universe: Universe
    proxies: list[ProxyRequest]  # calibration proxies, then the held-out one (never searched on)
    data_version: str
    seed: int


@dataclass(frozen=True)
class MethodOutcome:
    """One method's search and its scores on the held-out proxy (what a worker sends back)."""

    search: MethodSearch
    heldout: dict[str, float]  # {"gap", "default_gap"}


def plan_calibration(params: Params, live: Split, *, data_version: str, methods: Sequence[str] | None = None,
                     excluded: Sequence[Sequence[int]] = ()) -> CalibrationPlan:
    """Methods, universe and proxies of a calibration (see `calibrate`); trains nothing."""
    require_optuna()  # one clear line before any model is trained
    todo, skipped = plan_methods(params, live, methods)
    universe = build_universe(live, excluded)
    proxies = draw_proxies(universe, params.calibration.proxies + 1, seed=params.calibration.seed)
    return CalibrationPlan(todo, skipped, profile_key(params, live, data_version), universe, proxies,
                           data_version, params.evaluate.seeds[0])


def proxy_cases(params: Params, plan: CalibrationPlan, cache_dir: Path | None,
                log: LogFn | None = None) -> list[ProxyCase]:
    """Each proxy's split, the universe base and the proxy's oracle: trained, or loaded from `cache_dir`."""
    models = ProxyModels(params, plan.universe, plan.data_version, cache_dir, log=log)
    return [models.case(p) for p in plan.proxies]


def calibrate_method(params: Params, plan: CalibrationPlan, name: str, cases: Sequence[ProxyCase],
                     log: LogFn | None = None) -> MethodOutcome:
    """Search `name` on the calibration proxies, then score its choice and its defaults on the held-out one."""
    search_cases, heldout_case = list(cases[:-1]), cases[-1]
    s = search_method(params, name, search_cases, params.calibration, seed=plan.seed, log=log)
    default = score_on(params, name, setting_config(params, name, {}), [heldout_case], plan.seed)
    # Kept defaults are the profile's empty setting, so on the held-out proxy they are the defaults' score:
    # `s.values` also holds what a default chose at run time on the first proxy (nabla_tau's alpha0 from
    # its forget fraction), which the held-out proxy and the live request choose for themselves.
    chosen = (score_on(params, name, setting_config(params, name, s.values), [heldout_case], plan.seed)
              if s.chosen == "search" else default)
    heldout = {"gap": chosen.gap, "default_gap": default.gap}
    veto = params.calibration.heldout_veto
    if s.chosen == "search" and veto is not None and chosen.gap > default.gap + veto:
        # The proxies' favourite loses on the proxy it never saw: a search fitted to its two proxies.
        s.vetoed = {"values": s.values, "gap": s.gap, "time_s": s.time_s, "heldout_gap": chosen.gap}
        s.chosen, s.values, s.gap, s.time_s = "defaults", dict(s.default_values), s.default_gap, s.default_time_s
        heldout = {"gap": default.gap, "default_gap": default.gap, "vetoed_gap": chosen.gap}
    if log is not None:
        log({"stage": "calibrate", "method": name, "chosen": s.chosen, "values": s.values, "gap": s.gap,
             "heldout_gap": heldout["gap"], "heldout_default_gap": default.gap, "vetoed": s.vetoed,
             "wall_s": round(s.wall_s, 1)})
    return MethodOutcome(s, heldout)


def calibrate(params: Params, live: Split, *, data_version: str, methods: Sequence[str] | None = None,
              excluded: Sequence[Sequence[int]] = (), write: bool = True, log: LogFn | None = None,
              run_methods: Callable[[CalibrationPlan], dict[str, MethodOutcome]] | None = None,
              ) -> CalibrationResult:
    """Calibrate methods for the live request's data, model, recipe and request kind, from proxies only.

    Args:
        params: the run's params (`calibration` section: proxies, trials, budget_s, seed, profile_dir).
        live: the live request; only its ids, kind and evaluation ids are read (`build_universe`).
        data_version: names the data (`profile.data_version`, or the pipeline's DVC hash).
        methods: methods to calibrate (each must be searchable); None: `calibration.methods` or
            `unlearn.methods`, skipping those that cannot be searched, with why.
        excluded: sample ids of other requests (pending or done) proxies must stay clear of.
        write: write the profile to `calibration.profile_dir` (and cache proxy models there).
        log: progress events.
        run_methods: runs `calibrate_method` for each of `plan.todo` elsewhere (Dask workers) and returns the
            outcomes; None: here, one method after the other, on proxy models trained once.

    Returns:
        The frozen result; `result.path` is the profile written.
    """
    plan = plan_calibration(params, live, data_version=data_version, methods=methods, excluded=excluded)
    emit = log or (lambda event: None)
    emit({"stage": "calibrate", "universe": plan.universe.summary(), "proxies": [p.description for p in plan.proxies]})
    if run_methods is None:
        cases = proxy_cases(params, plan, Path(params.calibration.profile_dir) / "models" if write else None, log)
        outcomes = {name: calibrate_method(params, plan, name, cases, log) for name in plan.todo}
    else:
        outcomes = run_methods(plan)
    return finish_calibration(params, plan, outcomes, write)


def finish_calibration(params: Params, plan: CalibrationPlan, outcomes: dict[str, MethodOutcome],
                       write: bool) -> CalibrationResult:
    """The profile of `outcomes` (merged into the one on disk for the same key when `write`)."""
    cal = params.calibration
    searches = {name: outcomes[name].search for name in plan.todo}
    heldout = {name: outcomes[name].heldout for name in plan.todo}
    path = profile_path(cal.profile_dir, plan.key)
    profile = new_profile(plan.key, read_profile(path, plan.key) if write and path.exists() else None)
    summaries = [p.summary() for p in plan.proxies]
    for name, s in searches.items():
        profile["methods"][name] = {
            **s.as_dict(), "values": s.values if s.chosen == "search" else {},
            "fingerprint": method_fingerprint(name),
            "heldout_gap": heldout[name]["gap"], "heldout_default_gap": heldout[name]["default_gap"],
            "proxies": summaries[:-1], "heldout_proxy": summaries[-1], "universe": plan.universe.summary(),
            "settings": cal.model_dump(exclude={"methods", "use_profile", "profile_dir"}), "seed": plan.seed,
            "fixed": setting_config(params, name, {}).model_dump(include=set(
                params.unlearn.method_config(name).model_fields_set))}
        profile["skipped"].pop(name, None)
    profile["skipped"].update(plan.skipped)
    written = write_profile(path, profile) if write else None
    return CalibrationResult(searches, heldout, plan.skipped, profile, written, summaries)
