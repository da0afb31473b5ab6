"""The contract every registered method honours (scikit-learn's check_estimator, for unlearning).

Parametrised over `list_methods()`, on digits (classification, class 3 forgotten) or diabetes (regression,
top targets forgotten), CPU, tiny budgets.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearning.config import MnemonicConfig, RequestConfig, TrainConfig
from unlearning.methods import METHODS, DataAccessError, UnlearnInputs, list_methods, unlearn
from unlearning.models import create_model
from unlearning.requests import resolve
from unlearning.steps import train_recipe
from unlearning.training import per_sample_loss, predict

# Budgets small enough for a CPU contract run; behaviour at full defaults is tested per method.
FAST = {"retrain": {"recipe": {"epochs": 5}}, "gkt": {"cycles": 3, "checkpoint_every": 1}}


@pytest.fixture(scope="module")
def class_case(digits):
    """A small gap-head cnn, seeded (unseeded, its init came from whatever the earlier tests left in the global
    RNG, so the original changed with the selection of tests).

    The head was chosen when `mnemonic`'s official step-size rule moved only pooled-head models; its code-based
    rule (MnemonicConfig scale='codes') forgets on flat heads and the mlp too (tests/methods), and here its
    forget loss rises about x10.
    """
    split = resolve(RequestConfig(classes=[3]), digits)
    torch.manual_seed(0)
    model = create_model("cnn", 10, digits.in_shape, width=8, head="gap")
    # Mnemonic codes mixed in, so the `mnemonic` method can run on the same original as everyone else.
    train_recipe(model, split.train(), TrainConfig(epochs=8, mnemonic=MnemonicConfig(t_mix=0.1)), num_classes=10)
    return model, split


@pytest.fixture(scope="module")
def regression_case(diabetes):
    lo = float(torch.quantile(diabetes.y_train, 0.8))
    split = resolve(RequestConfig(target_range=[lo, 1e9]), diabetes)
    y = diabetes.y_train
    torch.manual_seed(0)
    model = create_model("regressor", 1, diabetes.in_shape, y_mean=float(y.mean()), y_std=float(y.std()))
    train_recipe(model, split.train(), TrainConfig(epochs=30, lr=3e-3), num_classes=1)
    return model, split


def _case(name, class_case, regression_case):
    return class_case if "classification" in METHODS.get(name).tasks else regression_case


def _config(name):
    return METHODS.get(name).config.model_validate(FAST.get(name, {}))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _forget_loss(model, split) -> float:
    forget = split.forget()
    return float(per_sample_loss(predict(model, forget), forget.y).mean())


@pytest.fixture(scope="module")
def runs(class_case, regression_case):
    """Each method run once per seed pair (0, 0, 1), cached for all contract checks."""
    cache = {}

    def get(name):
        if name not in cache:
            model, split = _case(name, class_case, regression_case)
            before = _state(model)
            first = unlearn(name, model, split, _config(name), seed=0, device="cpu")
            second = unlearn(name, model, split, _config(name), seed=0, device="cpu")
            cache[name] = (model, split, before, first, second)
        return cache[name]

    return get


METHOD_NAMES = list_methods()


def test_registry_is_not_empty() -> None:
    assert {"retrain", "finetune", "neggrad", "neggrad_plus", "random_label"} <= set(METHOD_NAMES)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_same_architecture_back(name, runs) -> None:
    model, _, _, first, _ = runs(name)
    assert type(first.model) is type(model)
    assert {k: v.shape for k, v in first.model.state_dict().items()} == \
           {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_input_model_unchanged(name, runs) -> None:
    model, _, before, _, _ = runs(name)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_finite_weights(name, runs) -> None:
    _, _, _, first, _ = runs(name)
    assert all(torch.isfinite(v).all() for v in first.model.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_deterministic_with_seed(name, runs) -> None:
    _, _, _, first, second = runs(name)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.behaviour
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_forget_loss_rises(name, runs, check) -> None:
    model, split, _, first, _ = runs(name)
    check("forget loss, unlearned / original", _forget_loss(first.model, split) / _forget_loss(model, split),
          ">", 1.0)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_empty_forget_set_raises(name, class_case, regression_case) -> None:
    model, split = _case(name, class_case, regression_case)
    empty = dataclasses.replace(split, forget_idx=split.forget_idx[:0])
    with pytest.raises(ValueError, match="empty forget set"):
        unlearn(name, model, empty, _config(name), device="cpu")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_declared_data_access_is_enforced(name, runs, class_case, regression_case) -> None:
    """A method touches only what it declared; with nothing granted, a data-using method cannot run."""
    _, _, _, first, _ = runs(name)
    info = METHODS.get(name)
    assert set(first.touched) <= set(info.needs)
    if not info.needs:
        assert first.touched == []
        return
    assert first.touched, f"{name} declares {sorted(info.needs)} but touched nothing"
    model, split = _case(name, class_case, regression_case)
    starved = UnlearnInputs(split, frozenset(), device=torch.device("cpu"), seed=0)
    import copy

    with pytest.raises(DataAccessError):
        info.fn(copy.deepcopy(model), starved, _config(name))


def test_unsupported_scenario_is_refused(class_case) -> None:
    model, split = class_case
    regression_only = [n for n in METHOD_NAMES if "classification" not in METHODS.get(n).tasks]
    for name in regression_only:
        with pytest.raises(ValueError, match="does not support classification tasks"):
            unlearn(name, model, split, device="cpu")
