"""`model_details`: the small per-model data behind the report's histograms and per-class heatmap.

The results JSON holds aggregate metrics only; the report also shows how each model's membership signal
is distributed on forget versus test samples, and its accuracy per class. Storing histograms (not samples)
keeps that to about a kilobyte per model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..metrics.signals import signals
from ..requests import Split
from ..training import model_device, predict

N_BINS = 24
LOW_EDGE = 1e-5  # entropies below this are "certain"; a log axis needs a floor


def signal_bins(split: Split) -> np.ndarray:
    """Fixed bin edges for the split's signal, the same for every model so their histograms compare.

    Log-spaced, because a trained model's entropy on its members sits orders of magnitude below its
    entropy on unseen data: linear bins would put both in the first bin. The first bin starts at 0.
    Classification: entropy, up to ln(C). Regression: L1 error, from 1e-3 to 4 target standard deviations.
    """
    if split.dataset.task == "regression":
        scale = float(split.dataset.y_train.float().std()) or 1.0
        lo, hi = 1e-3 * scale, 4.0 * scale
    else:
        lo, hi = LOW_EDGE, math.log(max(split.dataset.num_classes, 2))
    return np.concatenate([[0.0], np.geomspace(lo, hi, N_BINS)])


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    # Values past the last edge (a wild regression error) land in the last bin instead of vanishing.
    clipped = np.clip(np.nan_to_num(values, nan=edges[-1]), edges[0], edges[-1])
    return [int(c) for c in np.histogram(clipped, bins=edges)[0]]


def model_details(model: nn.Module, split: Split) -> dict[str, Any]:
    """Per-class test accuracy and histograms of the per-sample membership signal, JSON-able and small.

    Runs in eval mode under no_grad on the model's device: one forward pass over forget, retain and test.

    Args:
        model: a trained, unlearned or retrained model of the split's dataset.
        split: the forget request's split.

    Returns:
        `{"signal": "entropy" | "l1", "bins": [N_BINS + 1 edges], "hist": {"forget", "retain", "test":
        [N_BINS counts]}}`, plus `"per_class_test_acc": [C fractions, null for a class without test samples]`
        for classification.
    """
    device = model_device(model)
    regression = split.dataset.task == "regression"
    name = "l1" if regression else "entropy"
    edges = signal_bins(split)
    out: dict[str, Any] = {"signal": name, "bins": [float(f"{e:.4g}") for e in edges], "hist": {}}
    with torch.no_grad():
        for part, samples in (("forget", split.forget(device)), ("retain", split.retain(device)),
                              ("test", split.test(device))):
            outputs = predict(model, samples)  # [N, C] logits, or [N] predictions
            out["hist"][part] = _histogram(signals(outputs, samples.y, regression)[name], edges)
            if part == "test" and not regression:
                out["per_class_test_acc"] = _per_class(outputs, samples.y, split.dataset.num_classes)
    return out


def _per_class(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Accuracy per class from logits already computed ([N, C], [N] -> C values, None where no sample)."""
    labels = labels.to(logits.device).long()
    hits = torch.bincount(labels, weights=(logits.argmax(1) == labels).double(), minlength=num_classes)
    totals = torch.bincount(labels, minlength=num_classes)
    return [round(float(h / t), 4) if t else None for h, t in zip(hits.tolist(), totals.tolist(), strict=True)]
