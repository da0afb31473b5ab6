"""Regression methods (Blindspot, Gaussian-Amnesiac) forgetting the top 20 % of diabetes targets, CPU."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from unlearning.config import RequestConfig, TrainConfig
from unlearning.methods import unlearn
from unlearning.methods.blindspot import BlindspotConfig
from unlearning.methods.gaussian_amnesiac import GaussianAmnesiacConfig
from unlearning.methods.retrain import RetrainConfig
from unlearning.models import create_model
from unlearning.requests import resolve
from unlearning.training import fit, predict


def _mae(model, samples) -> float:
    return float((predict(model, samples) - samples.y).abs().mean())


@pytest.fixture(scope="module")
def range_case(diabetes):
    ds = diabetes
    lo = float(torch.quantile(ds.y_train, 0.8))
    split = resolve(RequestConfig(target_range=[lo, float(ds.y_train.max())]), ds)
    recipe = TrainConfig(epochs=100)
    torch.manual_seed(0)
    base = create_model("regressor", 1, ds.in_shape, y_mean=float(ds.y_train.mean()),
                        y_std=float(ds.y_train.std()))
    fit(base, split.train(), recipe)
    oracle = unlearn("retrain", base, split, RetrainConfig(recipe=recipe)).model
    return split, base, oracle


@pytest.mark.behaviour
def test_blindspot_moves_forget_error_toward_the_oracle(range_case, check):
    split, base, oracle = range_case
    result = unlearn("blindspot", base, split, seed=0)
    f_base, f_oracle, f_new = (_mae(m, split.forget()) for m in (base, oracle, result.model))
    check("forget MAE gap to oracle, unlearned / original", abs(f_new - f_oracle) / abs(f_base - f_oracle),
          "<", 0.8)
    retain_rise = _mae(result.model, split.retain_test()) / _mae(base, split.retain_test()) - 1
    check("retain-test MAE relative rise", retain_rise, "<=", 0.1)
    assert result.touched == ["forget", "retain"]


@pytest.mark.behaviour
def test_gaussian_amnesiac_moves_forget_error_up(range_case, check):
    split, base, _ = range_case
    result = unlearn("gaussian_amnesiac", base, split, seed=0)
    preds = predict(result.model, split.test())
    assert torch.isfinite(preds).all()
    # Toward the oracle's larger error on the forgotten range.
    check("forget MAE, unlearned / original", _mae(result.model, split.forget()) / _mae(base, split.forget()),
          ">", 1.0)


def test_regression_methods_refuse_classification(random_split, mlp_original):
    for name in ["blindspot", "gaussian_amnesiac"]:
        with pytest.raises(ValueError, match="does not support classification"):
            unlearn(name, mlp_original, random_split)


@pytest.mark.parametrize("cls, bad", [
    (BlindspotConfig, {"beta_at": -1}), (BlindspotConfig, {"proxy_epochs": 0}),
    (GaussianAmnesiacConfig, {"lr": 0}), (GaussianAmnesiacConfig, {"unknown_key": 1}),
])
def test_configs_reject_bad_values(cls, bad):
    with pytest.raises(ValidationError):
        cls.model_validate(bad)
