"""The whole experiment in one process: per training seed a base model and an oracle, then every method over
every unlearning seed on each base, each model evaluated, summarised with intervals and gated.

This is the one place that loops over `evaluate.training_seeds` and `evaluate.seeds`; the steps themselves
live in `unlearning.steps`, the intervals in `unlearning.stats`, the gate rule in `unlearning.verdicts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import nn

from ..calibration.apply import use_profile
from ..methods import unsupported_reason
from ..metrics.membership import band_reference
from ..params import Params
from ..report import model_details
from ..requests import Split
from ..stats import rate_sizes, summarize
from ..steps import (
    LogFn,
    evaluate_model,
    load_split,
    run_method,
    timing_metrics,
    train_oracle,
    train_original,
    weak_methods,
    with_training_seed,
)
from ..utils import get_device
from ..verdicts import decide_gates, noise_notes, overall


def stage_count(params: Params) -> int:
    """Units of work the runner will do (for the overall progress bar): bases, oracles, method x seeds."""
    seeds = len(params.evaluate.training_seeds)
    return seeds * (1 + int(params.evaluate.oracle) + len(params.unlearn.methods) * len(params.evaluate.seeds))


def _evaluated(params: Params, model: nn.Module, split: Split, **kw: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    metrics = evaluate_model(params, model, split, **kw)
    return {**metrics, "eval/s": time.perf_counter() - t0}


def run_experiment(params: Params, log: LogFn | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None,
                   on_step: Callable[[], None] | None = None,
                   trained: dict[int, tuple[Any, ...]] | None = None) -> dict[str, Any]:
    """Bases, oracles and every configured method, evaluated, summarised and gated; the JSON-able results.

    Shape: {"request", "device", "seeds": {"training", "unlearning"}, "notes", "original", "oracle",
    "methods": {name: {...}}, "gates": {name: [gate dicts]}, "verdicts": {name: verdict}, "details": {model:
    report data of its first run (`unlearning.report.model_details`)}}. Each model entry
    holds the metric means, `ci: {metric: [low, high]}` (95 %), `n_seeds` and `runs` (one metric dict per
    run, labelled `training_seed` / `seed`); methods add "data" (what they touched), "settings" (the config
    they ran with) and "settings_source" (setting -> params / profile / default; `unlearning.calibration`);
    "calibration" says which profile was used (`ProfileUse.summary`). Speedup = the oracle's
    (retrain) time of the same training seed / method time, measured in this run. `on_update(results)` is
    called after every evaluated model, so a long run can save partial results (`results["complete"]` is
    False until the end); `on_step()` after each unit of `stage_count`. `trained` (training seed -> (base,
    base time, oracle, oracle time)) is read before training and filled after: experiments that differ only
    in method settings share their bases and oracles, and so their speedup reference; the caller vouches
    that data, model, recipe and request agree.
    """
    update = on_update or (lambda results: None)
    step = on_step or (lambda: None)
    emit = log or (lambda event: None)
    split = load_split(params)
    sizes = rate_sizes(split)
    emit({"stage": "split", **split.summary()})
    profile = use_profile(params, split)  # unset method settings from a matching calibration profile
    params = profile.params
    emit({"stage": "calibration", **profile.summary()})
    seeds = params.evaluate.training_seeds
    mia_key = f"mia/entropy_{params.evaluate.mia_classifier}"
    results: dict[str, Any] = {"request": split.summary(), "device": str(get_device(params.train.device)),
                               "complete": False, "seeds": {"training": seeds, "unlearning": params.evaluate.seeds},
                               "notes": [], "calibration": profile.summary()}
    results["speedup_reference"] = "oracle (retrain)" if params.evaluate.oracle else "original training"

    bases, oracles, base_runs, oracle_runs, reference, base_time = {}, {}, [], [], {}, {}
    for t in seeds:
        if trained is not None and t in trained:
            bases[t], base_time[t], oracles[t], t_oracle = trained[t]
            for _ in range(1 + int(params.evaluate.oracle)):
                step()
        else:
            p = with_training_seed(params, t)
            bases[t], base_time[t] = train_original(p, split, log=log)
            step()
            oracles[t], t_oracle = (None, float("nan"))
            if params.evaluate.oracle:
                oracles[t], t_oracle = train_oracle(p, split, log=log)
                step()
            if trained is not None:
                trained[t] = (bases[t], base_time[t], oracles[t], t_oracle)
        reference[t] = t_oracle if params.evaluate.oracle else base_time[t]
    # The retrains' per-sample outputs: what the paired membership shift of every model is measured against.
    band = [oracles[t] for t in seeds if oracles[t] is not None]
    membership = band_reference(band, split)
    for i, t in enumerate(seeds):
        emit({"stage": "evaluate", "model": "original", "training_seed": t})
        base_runs.append({"training_seed": t, **_evaluated(params, bases[t], split, original=bases[t],
                                                            oracle=oracles[t], membership=membership),
                          "time/s": base_time[t]})
        if oracles[t] is not None:
            emit({"stage": "evaluate", "model": "oracle", "training_seed": t})
            oracle_runs.append({"training_seed": t, **_evaluated(params, oracles[t], split, original=bases[t],
                                                                  oracle=oracles[t], membership=membership,
                                                                  band_member=i),
                                **timing_metrics(reference[t], reference[t])})
    first = seeds[0]  # the report's distributions and heatmap show the first training seed's models
    results["details"] = {"original": model_details(bases[first], split)}
    results["original"] = {**summarize(base_runs, sizes), "runs": base_runs}
    if oracle_runs:
        results["oracle"] = {**summarize(oracle_runs, sizes), "runs": oracle_runs}
        results["details"]["oracle"] = model_details(oracles[first], split)
        results["notes"] = noise_notes(base_runs, oracle_runs, params.promote.gates, scenario=split.scenario,
                                       sizes=sizes, mia_key=mia_key)
        for note in results["notes"]:
            emit({"stage": "gates", "note": note})
    results.update(methods={}, gates={}, verdicts={},
                   weak=weak_methods(list(params.unlearn.methods), split.scenario))
    update(results)

    for name in params.unlearn.methods:
        reason = unsupported_reason(name, split)
        if reason:  # e.g. a class-only method in a random-subset run: say why, keep going
            emit({"stage": "unlearn", "method": name, "skipped": reason})
            results["methods"][name] = {"skipped": reason}
            for _ in range(len(seeds) * len(params.evaluate.seeds)):
                step()
            update(results)
            continue
        runs, touched = [], []
        for t in seeds:
            for seed in params.evaluate.seeds:
                emit({"stage": "unlearn", "method": name, "training_seed": t, "seed": seed})
                res = run_method(params, name, bases[t], split, seed=seed, log=log)
                emit({"stage": "evaluate", "model": name, "training_seed": t, "seed": seed})
                metrics = _evaluated(params, res.model, split, original=bases[t], oracle=oracles[t], seed=seed,
                                     membership=membership)
                runs.append({"training_seed": t, "seed": seed, **metrics,
                             **timing_metrics(res.time_s, reference[t])})
                if len(runs) == 1:
                    results["details"][name] = model_details(res.model, split)
                touched = res.touched
                step()
        results["methods"][name] = {**summarize(runs, sizes), "runs": runs, "data": touched or ["none"],
                                    "settings": params.unlearn.method_config(name).model_dump(mode="json"),
                                    "settings_source": profile.sources[name]}
        verdicts = decide_gates(runs, base_runs, oracle_runs or None, params.promote.gates,
                                scenario=split.scenario, sizes=sizes, mia_key=mia_key)
        results["gates"][name] = [v.as_dict() for v in verdicts]
        results["verdicts"][name] = overall(verdicts)
        update(results)
    results["complete"] = True
    return results
