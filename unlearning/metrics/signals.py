"""Per-sample membership signals, kept apart from the attacks that consume them (`mia.py`).

A signal is one number per sample, computed from a model's outputs. Sign conventions, i.e. what a
training member tends to look like next to an unseen sample:

- `entropy`: lower for members (the model is more confident on what it was trained on).
- `loss` (cross-entropy): lower for members.
- `confidence` (softmax probability of the true label): higher for members.
- `l1` (regression |prediction - target|): lower for members.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..requests import Split
from ..training import model_device
from .outputs import eval_sets, model_outputs


def entropy(logits: Tensor) -> Tensor:
    """Entropy of the softmax, -sum_k p_k log p_k, per sample ([N, C] -> [N])."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


def ce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy per sample ([N, C], [N] -> [N])."""
    return F.cross_entropy(logits.float(), targets.to(logits.device), reduction="none")


def true_confidence(logits: Tensor, targets: Tensor) -> Tensor:
    """Softmax probability of the true label per sample ([N, C], [N] -> [N])."""
    probs = F.softmax(logits.float(), dim=1)
    return probs.gather(1, targets.to(logits.device).long()[:, None]).squeeze(1)


def l1_loss(preds: Tensor, targets: Tensor) -> Tensor:
    """Absolute error per sample for regression ([N], [N] -> [N])."""
    return (preds.float().flatten() - targets.to(preds.device).float()).abs()


def signals(outputs: Tensor, targets: Tensor, regression: bool) -> dict[str, np.ndarray]:
    """Every signal that applies to the task, as float64 numpy arrays.

    Args:
        outputs: logits [N, C], or predictions [N] for regression.
        targets: labels or numeric targets, [N].
        regression: whether the task is regression.

    Returns:
        `{"l1"}` for regression, else `{"entropy", "loss", "confidence"}`, each of shape [N].
    """
    if regression:
        found = {"l1": l1_loss(outputs, targets)}
    else:
        found = {"entropy": entropy(outputs), "loss": ce_loss(outputs, targets),
                 "confidence": true_confidence(outputs, targets)}
    return {k: v.detach().cpu().double().numpy() for k, v in found.items()}


def mia_scores(model: nn.Module, split: Split) -> dict[str, np.ndarray]:
    """Per-sample signals of `model` on the forget, retain and test sets (for histograms and ROC plots).

    Args:
        model: the model to probe (evaluated in eval mode on its own device).
        split: the forget request's split.

    Returns:
        Flat keys `"<set>/<signal>"`, e.g. `"forget/loss"`, `"test/entropy"`, `"retain/l1"`.
    """
    device = model_device(model)
    regression = split.dataset.task == "regression"
    sets = eval_sets(split, device)
    outs = model_outputs(model, split, sets, device)  # shared with `evaluate` of the same model
    out: dict[str, np.ndarray] = {}
    for name in ("forget", "retain", "test"):
        for key, values in signals(outs[name], sets[name].y, regression).items():
            out[f"{name}/{key}"] = values
    return out
