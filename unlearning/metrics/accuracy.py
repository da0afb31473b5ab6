"""Utility metrics: accuracy and MAE per split, per-class accuracy and confusion matrices, METHODS.md §9.1.

Accuracies are fractions in [0, 1] (not percent). The good value is the retrained oracle's, on every split:
on forget samples that is ≈ 0 for class forgetting and ≈ test accuracy for random forgetting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..data import Samples
from ..training import predict


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy of logits against class labels.

    Args:
        outputs: logits, [N, C].
        targets: class indices, [N].

    Returns:
        The fraction of correct predictions; nan for an empty set.
    """
    if len(targets) == 0:
        return float("nan")
    return float((outputs.argmax(1) == targets.to(outputs.device)).float().mean())


def mean_abs_error(outputs: Tensor, targets: Tensor) -> float:
    """Mean L1 error of regression predictions (the DRU papers' loss); nan for an empty set.

    Args:
        outputs: predictions, [N].
        targets: numeric targets, [N].

    Returns:
        mean |prediction - target|, in target units.
    """
    if len(targets) == 0:
        return float("nan")
    return float((outputs.float().flatten() - targets.to(outputs.device).float()).abs().mean())


def utility(outputs: Tensor, targets: Tensor, regression: bool) -> float:
    """Accuracy for classification, MAE for regression."""
    return mean_abs_error(outputs, targets) if regression else accuracy(outputs, targets)


def per_class_accuracy(model: nn.Module, samples: Samples, num_classes: int) -> list[float]:
    """Accuracy of `model` on the samples of each class (for per-class bar plots).

    Args:
        model: a classifier.
        samples: labelled examples.
        num_classes: number of classes C.

    Returns:
        C fractions; nan for a class with no sample in `samples`.
    """
    return class_accuracies(confusion_matrix(model, samples, num_classes))


def class_accuracies(cm: np.ndarray) -> list[float]:
    """Per-class accuracy from a confusion matrix (rows: true classes, as `confusion_matrix` returns).

    Args:
        cm: counts [C, C].

    Returns:
        C fractions; nan for a class with no sample.
    """
    totals = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.diag(cm) / totals
    return [float(a) for a in acc]


def confusion_matrix(model: nn.Module, samples: Samples, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        model: a classifier.
        samples: labelled examples.
        num_classes: number of classes C.

    Returns:
        An int64 array [C, C]: rows are true classes, columns predicted classes.
    """
    if num_classes < 1:
        raise ValueError(f"'num_classes' must be >= 1; got {num_classes}")
    pred = predict(model, samples).argmax(1).cpu()
    true = samples.y.cpu().long()
    flat = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).numpy().astype(np.int64)
