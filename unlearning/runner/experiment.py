"""The whole experiment in one process: original, oracle, then every method over every seed, scored.

This is the one place that loops over `evaluate.seeds`; the steps themselves live in `unlearning.steps`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from ..methods import unsupported_reason
from ..params import Params
from ..steps import (
    LogFn,
    evaluate_model,
    load_split,
    run_method,
    timing_metrics,
    train_oracle,
    train_original,
)
from ..utils import get_device


def mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over seeds (NaN ignored), with `<key>/std` beside it when there are several."""
    out: dict[str, float] = {}
    for key in rows[0]:
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if not vals:
            continue
        finite = [v for v in vals if not math.isnan(v)]
        out[key] = statistics.fmean(finite) if finite else float("nan")
        if len(rows) > 1:
            out[f"{key}/std"] = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return out


def stage_count(params: Params) -> int:
    """Units of work the runner will do (for the overall progress bar): original, oracle, method x seed."""
    return 1 + int(params.evaluate.oracle) + len(params.unlearn.methods) * len(params.evaluate.seeds)


def run_experiment(params: Params, log: LogFn | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None,
                   on_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Original, oracle and every configured method, evaluated; the JSON-able results.

    Shape: {"request": {...}, "original": {metrics}, "oracle": {metrics}, "methods": {name: {metrics,
    "time/s", "speedup", "data"}}}. Speedup = oracle (retrain) time / method time, measured in this run.
    With several `evaluate.seeds`, method metrics are means with `<key>/std` beside them.
    `on_update(results)` is called after every evaluated model, so a long run can save partial results
    (`results["complete"]` is False until the end); `on_step()` after each unit of `stage_count`.
    """
    update = on_update or (lambda results: None)
    step = on_step or (lambda: None)
    emit = log or (lambda event: None)
    split = load_split(params)
    emit({"stage": "split", **split.summary()})
    original, t_original = train_original(params, split, log=log)
    step()
    oracle, t_oracle = (None, float("nan"))
    if params.evaluate.oracle:
        oracle, t_oracle = train_oracle(params, split, log=log)
        step()

    emit({"stage": "evaluate", "model": "original"})
    results: dict[str, Any] = {"request": split.summary(), "device": str(get_device(params.train.device)),
                               "complete": False}
    results["original"] = {**evaluate_model(params, original, split, original=original, oracle=oracle),
                           "time/s": t_original}
    if oracle is not None:
        emit({"stage": "evaluate", "model": "oracle"})
        results["oracle"] = {**evaluate_model(params, oracle, split, original=original, oracle=oracle),
                             **timing_metrics(t_oracle, t_oracle)}
    reference_time = t_oracle if oracle is not None else t_original
    results["speedup_reference"] = "oracle (retrain)" if oracle is not None else "original training"
    results["methods"] = {}
    update(results)

    for name in params.unlearn.methods:
        reason = unsupported_reason(name, split)
        if reason:  # e.g. a class-only method in a random-subset run: say why, keep going
            emit({"stage": "unlearn", "method": name, "skipped": reason})
            results["methods"][name] = {"skipped": reason}
            for _ in params.evaluate.seeds:
                step()
            update(results)
            continue
        rows, touched = [], []
        for seed in params.evaluate.seeds:
            emit({"stage": "unlearn", "method": name, "seed": seed})
            res = run_method(params, name, original, split, seed=seed, log=log)
            emit({"stage": "evaluate", "model": name, "seed": seed})
            metrics = evaluate_model(params, res.model, split, original=original, oracle=oracle, seed=seed)
            rows.append({**metrics, **timing_metrics(res.time_s, reference_time)})
            touched = res.touched
            step()
        results["methods"][name] = {**mean_std(rows), "data": touched or ["none"]}
        update(results)
    results["complete"] = True
    return results
