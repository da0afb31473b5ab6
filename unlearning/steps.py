"""The experiment's steps on typed params: split, original model, oracle, one method, scoring, timing.

The runner (`unlearning.runner`, `python -m unlearning`) and the pipeline's stages in `flows/` both call
these, so the code of a step exists once. Nothing here tracks or versions anything, and nothing here
loops over seeds (the runner does); it returns models, times and metric dicts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data import Dataset, Samples
from .datasets import load_dataset
from .methods import METHODS, UnlearnResult, unlearn
from .models import Net, create_model
from .params import Params
from .requests import Split, resolve
from .training import LogFn, fit
from .utils import get_device, timed


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


def with_training_seed(params: Params, seed: int) -> Params:
    """The params with `train.seed` replaced: the base model and oracle of one training seed."""
    return params.model_copy(update={"train": params.train.model_copy(update={"seed": seed})})


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


def run_method(params: Params, name: str, original: nn.Module, split: Split, seed: int = 0,
               log: LogFn | None = None) -> UnlearnResult:
    """Run one method on a copy of `original` on the configured device."""
    device = get_device(params.train.device)
    return unlearn(name, original, split, params.unlearn.method_config(name), seed=seed, device=device, log=log)


def evaluate_model(params: Params, model: nn.Module, split: Split, original: nn.Module | None = None,
                   oracle: nn.Module | None = None, seed: int = 0, membership: Any = None,
                   band_member: int | None = None) -> dict[str, float]:
    """All metrics of `model` (against the original, the oracle and the band's membership reference where
    given: `unlearning.metrics.membership`)."""
    from .metrics import evaluate

    return evaluate(model, split, original=original, oracle=oracle, cfg=params.evaluate, seed=seed,
                    membership=membership, band_member=band_member)


def timing_metrics(time_s: float, reference_s: float | None) -> dict[str, float]:
    """`time/s` and `speedup` (reference time / method time): the one place both are computed.

    The reference is the retrain oracle's training time (or the original's without an oracle), measured
    in the same run or stored with a reused model.
    """
    out = {"time/s": float(time_s)}
    if reference_s is not None and math.isfinite(reference_s) and reference_s > 0:
        out["speedup"] = float(reference_s) / time_s if time_s > 0 else float("inf")
    return out


def describe_methods() -> list[dict[str, Any]]:
    """Name, one-line summary, data touched, scenarios and tasks of every registered method."""
    return [{"name": n, "summary": METHODS.get(n).summary, "needs": sorted(METHODS.get(n).needs) or ["none"],
             "scenarios": sorted(METHODS.get(n).scenarios), "tasks": sorted(METHODS.get(n).tasks),
             "weak_on": METHODS.get(n).weak_on}
            for n in METHODS.names()]


def weak_methods(methods: list[str], scenario: str) -> dict[str, str]:
    """The listed methods that are weak by design on this scenario, with why (`register_method(weak_on=...)`)."""
    return {m: METHODS.get(m).weak_on[scenario] for m in methods if m in METHODS and scenario in METHODS.get(m).weak_on}
