"""Step budgets of the gradient-ascent methods: the cap bounds the number of optimiser steps, whatever the
size of the forget set (an epoch count tuned on digits means hundreds of ascent steps on MNIST)."""

from __future__ import annotations

import pytest
import torch

from unlearning.config import RequestConfig
from unlearning.methods import unlearn
from unlearning.methods._common import StepBudget
from unlearning.methods.neggrad import NegGradConfig
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
    assert _training_forwards("neggrad", split, NegGradConfig(epochs=5, max_steps=None)) == 5 * batches
    assert _training_forwards("neggrad", split, NegGradConfig(epochs=5, max_steps=4)) == 4
    assert NegGradConfig().max_steps == 15  # = 5 epochs x 3 batches on digits: the tuned run is uncapped


def test_neggrad_plus_stops_at_max_steps(split) -> None:
    assert _training_forwards("neggrad_plus", split, NegGradPlusConfig(epochs=3, max_steps=5)) == 2 * 5
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        NegGradPlusConfig(max_steps=0)
