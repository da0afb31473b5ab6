"""Step budgets of the gradient-ascent methods: the cap bounds the number of optimiser steps, whatever the
size of the forget set (an epoch count tuned on digits means hundreds of ascent steps on MNIST)."""

from __future__ import annotations

import pytest
import torch

from unlearning.config import RequestConfig
from unlearning.methods import unlearn
from unlearning.methods._common import StepBudget
from unlearning.methods.neggrad import ForgetWindow, NegGradConfig
from unlearning.methods.neggrad_plus import NegGradPlusConfig
from unlearning.models import create_model
from unlearning.requests import resolve


def test_step_budget_caps_across_passes() -> None:
    budget = StepBudget(5)
    assert len(list(budget.take(range(3)))) == 3 and not budget.spent
    assert len(list(budget.take(range(3)))) == 2 and budget.spent
    assert list(budget.take(range(3))) == []
    unlimited = StepBudget(None)
    assert len(list(unlimited.take(range(100)))) == 100 and not unlimited.spent


@pytest.fixture(scope="module")
def split(digits):
    return resolve(RequestConfig(classes=[3]), digits)


def _training_forwards(name: str, split, cfg) -> int:
    """Forward passes in train mode during `unlearn`: one per step for NegGrad, two for NegGrad+."""
    torch.manual_seed(0)
    model = create_model("mlp", 10, split.dataset.in_shape, width=16)
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(1) if m.training else None)
    unlearn(name, model, split, cfg)  # the hook travels with the method's deep copy
    return len(calls)


def test_neggrad_stops_at_max_steps(split) -> None:
    batches = -(-len(split.forget_idx) // 64)  # 146 forget samples: 3 batches of 64 per epoch
    fixed = {"stop_forget_acc": None}  # the budget alone, as on every request kind but class
    assert _training_forwards("neggrad", split, NegGradConfig(epochs=5, max_steps=None, **fixed)) == 5 * batches
    assert _training_forwards("neggrad", split, NegGradConfig(epochs=5, max_steps=4, **fixed)) == 4
    # With the stop on, the cap bounds an ascent whose stop never fires (a net that answers 3 to everything).
    calls: list[int] = []
    model = _biased_to_class_3(split, 1e4)
    model.register_forward_hook(lambda m, args, out: calls.append(1) if m.training else None)
    unlearn("neggrad", model, split, NegGradConfig(lr=1e-6, stop_max_steps=7))
    assert len(calls) == 7


def _biased_to_class_3(split, bias: float) -> torch.nn.Module:
    """An mlp whose head adds `bias` to class 3's logit: -1e4 never predicts it, +1e4 always does."""
    torch.manual_seed(0)
    model = create_model("mlp", 10, split.dataset.in_shape, width=16)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias[3] = bias
    return model


def test_neggrad_stops_once_a_window_of_forget_samples_is_misclassified(split) -> None:
    """Class requests: the stop judges each batch before its step, so a model that already ignores the class
    takes one step per window of samples (64 = one batch, 128 = two), and none more."""
    calls: list[int] = []
    model = _biased_to_class_3(split, -1e4)
    model.register_forward_hook(lambda m, args, out: calls.append(1) if m.training else None)
    for window, steps in ((64, 1), (128, 2)):
        calls.clear()
        unlearn("neggrad", model, split, NegGradConfig(stop_window=window))
        assert len(calls) == steps
    calls.clear()
    unlearn("neggrad", model, split, NegGradConfig(stop_forget_acc=None, epochs=2, max_steps=50))
    assert len(calls) == 6  # no stop: two passes of 3 batches


def test_neggrad_does_not_stop_on_random_requests(random_split) -> None:
    """A random subset's retrain level is not 0 (it is the test accuracy), so the stop stays off there."""
    calls: list[int] = []
    model = _biased_to_class_3(random_split, -1e4)
    model.register_forward_hook(lambda m, args, out: calls.append(1) if m.training else None)
    unlearn("neggrad", model, random_split, NegGradConfig(epochs=2, max_steps=50))
    assert len(calls) == 2 * -(-len(random_split.forget_idx) // 64)


def test_forget_window_keeps_the_latest_samples() -> None:
    window = ForgetWindow(4)
    right = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # both predict class 1
    window.add(right, torch.tensor([1, 1]))
    assert not window.at_most(0.0)  # only 2 of 4 samples seen
    window.add(right, torch.tensor([0, 0]))
    assert (window.right, window.seen) == (2, 4) and window.at_most(0.5) and not window.at_most(0.4)
    window.add(right, torch.tensor([0, 0]))
    window.add(right, torch.tensor([0, 0]))
    assert (window.right, window.seen) == (0, 4) and window.at_most(0.0)


def test_neggrad_plus_stops_at_max_steps(split) -> None:
    assert _training_forwards("neggrad_plus", split, NegGradPlusConfig(epochs=3, max_steps=5)) == 2 * 5
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        NegGradPlusConfig(max_steps=0)
