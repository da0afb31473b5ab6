"""The experiment as stage functions: data split, original model, oracle, each method, evaluation.

`python -m unlearning` and the pipeline in `flows/` both call these, so the code of a stage exists once.
Nothing here tracks or versions anything; it returns models, times and metric dicts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import Params, TrainConfig
from .data import Dataset, Samples, load_dataset
from .methods import METHODS, UnlearnResult, unlearn, unsupported_reason
from .models import Net, create_model
from .requests import Split, resolve
from .training import fit
from .utils import get_device, timed

LogFn = Callable[[dict[str, Any]], None]


def load_split(params: Params) -> Split:
    """Load the configured dataset and resolve the forget request against it."""
    ds = load_dataset(params.data.name, params.data.root, params.data.download, **params.data.options())
    return resolve(params.request, ds)


def build_model(params: Params, dataset: Dataset, seed: int | None = None) -> Net:
    """A freshly initialised model for this dataset (regressors get the target scale)."""
    if dataset.task == "regression" and params.model.name != "regressor":
        raise ValueError(f"'model.name' must be 'regressor' for the regression dataset {dataset.name!r}; "
                         f"got {params.model.name!r}")
    if dataset.task == "classification" and params.model.name == "regressor":
        raise ValueError(f"'model.name' 'regressor' needs a regression task; {dataset.name!r} is classification")
    kwargs: dict[str, Any] = {}
    if params.model.width is not None:
        kwargs["width"] = params.model.width
    if params.model.head is not None:
        kwargs["head"] = params.model.head
    if dataset.task == "regression":
        kwargs["y_mean"] = float(dataset.y_train.float().mean())
        kwargs["y_std"] = float(dataset.y_train.float().std())
    torch.manual_seed(params.train.seed if seed is None else seed)
    return create_model(params.model.name, dataset.num_classes, dataset.in_shape, **kwargs)


def train_recipe(model: Net, samples: Samples, cfg: TrainConfig, *, num_classes: int,
                 log: LogFn | None = None, stage: str = "train") -> Net:
    """Train with `cfg`; with `train.mnemonic` set, mix class codes in and keep them with the model."""
    if cfg.mnemonic is None:
        return fit(model, samples, cfg, log=log, stage=stage)
    from .mnemonic_codes import code_mixing_loss, make_codes

    codes = make_codes(num_classes, tuple(samples.x.shape[1:]), seed=cfg.seed).to(samples.device)
    loss_fn = code_mixing_loss(codes, cfg.mnemonic.t_mix, torch.Generator().manual_seed(cfg.seed + 1))
    fit(model, samples, cfg, loss_fn=loss_fn, log=log, stage=stage)
    model.extra = {"mnemonic_codes": codes.cpu()}
    return model


def train_original(params: Params, split: Split, log: LogFn | None = None) -> tuple[Net, float]:
    """Train the original model on the full training set D; returns (model, seconds)."""
    device = get_device(params.train.device)
    model = build_model(params, split.dataset).to(device)
    with timed(device) as t:
        train_recipe(model, split.train(device), params.train, num_classes=split.dataset.num_classes,
                     log=log, stage="original")
    return model, t["s"]


def train_oracle(params: Params, split: Split, log: LogFn | None = None, seed: int = 0) -> tuple[Net, float]:
    """Retrain from a true re-initialisation on D_r with the original recipe; returns (model, seconds)."""
    device = get_device(params.train.device)
    init_seed = params.train.seed + 7_919 * (seed + 1)  # a different init from the original's
    model = build_model(params, split.dataset, seed=init_seed).to(device)
    with timed(device) as t:
        train_recipe(model, split.retain(device), params.train, num_classes=split.dataset.num_classes,
                     log=log, stage="oracle")
    return model, t["s"]


def method_config(params: Params, name: str) -> Any:
    """The typed config of a method; `retrain` inherits the training recipe unless given its own."""
    cfg = params.unlearn.method_config(name)
    if name == "retrain" and "recipe" not in ((params.unlearn.model_extra or {}).get("retrain") or {}):
        cfg = cfg.model_copy(update={"recipe": params.train})
    return cfg


def run_method(params: Params, name: str, original: nn.Module, split: Split, seed: int = 0,
               log: LogFn | None = None) -> UnlearnResult:
    """Run one method on a copy of `original` on the configured device."""
    device = get_device(params.train.device)
    return unlearn(name, original, split, method_config(params, name), seed=seed, device=device, log=log)


def evaluate_model(params: Params, model: nn.Module, split: Split, original: nn.Module | None = None,
                   oracle: nn.Module | None = None, seed: int = 0) -> dict[str, float]:
    """All metrics of `model` (against the original and the oracle where given)."""
    from .metrics import evaluate

    return evaluate(model, split, original=original, oracle=oracle, cfg=params.evaluate, seed=seed)


def _mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
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


def run_experiment(params: Params, log: LogFn | None = None,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Original, oracle and every configured method, evaluated; the JSON-able results.

    Shape: {"request": {...}, "original": {metrics}, "oracle": {metrics}, "methods": {name: {metrics,
    "time/s", "speedup", "data"}}}. Speedup = oracle (retrain) time / method time, measured in this run.
    With several `evaluate.seeds`, method metrics are means with `<key>/std` beside them.
    `on_update(results)` is called after every evaluated model, so a long run can save partial results
    (`results["complete"]` is False until the end).
    """
    update = on_update or (lambda results: None)
    emit = log or (lambda event: None)
    split = load_split(params)
    emit({"stage": "split", **split.summary()})
    original, t_original = train_original(params, split, log=log)
    oracle, t_oracle = (None, float("nan"))
    if params.evaluate.oracle:
        oracle, t_oracle = train_oracle(params, split, log=log)

    emit({"stage": "evaluate", "model": "original"})
    results: dict[str, Any] = {"request": split.summary(), "device": str(get_device(params.train.device)),
                               "complete": False}
    results["original"] = {**evaluate_model(params, original, split, original=original, oracle=oracle),
                           "time/s": t_original}
    if oracle is not None:
        emit({"stage": "evaluate", "model": "oracle"})
        results["oracle"] = {**evaluate_model(params, oracle, split, original=original, oracle=oracle),
                             "time/s": t_oracle, "speedup": 1.0}
    reference_time = t_oracle if oracle is not None else t_original
    results["speedup_reference"] = "oracle (retrain)" if oracle is not None else "original training"
    results["methods"] = {}
    update(results)

    for name in params.unlearn.methods:
        reason = unsupported_reason(name, split)
        if reason:  # e.g. a class-only method in a random-subset run: say why, keep going
            emit({"stage": "unlearn", "method": name, "skipped": reason})
            results["methods"][name] = {"skipped": reason}
            update(results)
            continue
        rows, touched = [], []
        for seed in params.evaluate.seeds:
            emit({"stage": "unlearn", "method": name, "seed": seed})
            res = run_method(params, name, original, split, seed=seed, log=log)
            emit({"stage": "evaluate", "model": name, "seed": seed})
            metrics = evaluate_model(params, res.model, split, original=original, oracle=oracle, seed=seed)
            metrics["time/s"] = res.time_s
            metrics["speedup"] = reference_time / res.time_s if res.time_s > 0 else float("inf")
            rows.append(metrics)
            touched = res.touched
        results["methods"][name] = {**_mean_std(rows), "data": touched or ["none"]}
        update(results)
    results["complete"] = True
    return results


def describe_methods() -> list[dict[str, Any]]:
    """Name, one-line summary, data touched, scenarios and tasks of every registered method."""
    return [{"name": n, "summary": METHODS.get(n).summary, "needs": sorted(METHODS.get(n).needs) or ["none"],
             "scenarios": sorted(METHODS.get(n).scenarios), "tasks": sorted(METHODS.get(n).tasks)}
            for n in METHODS.names()]
