"""The evaluation sets of a split, and a model's outputs on them: one pass per set, shared.

`evaluate` and `mia_scores` (the pipeline's MIA histogram) both need a model's outputs on the forget,
retain and test sets; `model_outputs` memoises them per (model weights, data), so scoring a model and
then plotting its signals predicts once (on MNIST, 68k images: ~9 s of a 1-thread CPU).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..data import Samples
from ..requests import Split
from ..training import model_device, predict
from .cache import OUTPUTS, digest


def eval_sets(split: Split, device: torch.device) -> dict[str, Samples]:
    """The evaluation sets; forget_test / retain_test only where the request defines them and they are non-empty."""
    sets = {"forget": split.forget(device), "retain": split.retain(device), "test": split.test(device)}
    for name, samples in (("forget_test", split.forget_test(device)), ("retain_test", split.retain_test(device))):
        if samples is not None and len(samples) > 0:
            sets[name] = samples
    return sets


def forget_eval(sets: Mapping[str, Samples]) -> str:
    """The forget set that distances, ZRF and AIN use: forget-test samples when they exist (the papers'
    choice), else forget-train."""
    return "forget_test" if "forget_test" in sets else "forget"


def outputs(model: nn.Module, split: Split, sets: Mapping[str, Samples], names: tuple[str, ...],
            device: torch.device) -> dict[str, Tensor]:
    """`predict` on the named sets, on `device`; forget_test / retain_test rows come from the test outputs.

    `predict` scores every row on its own (eval mode), so a row's output is the same in either pass.
    """
    out = {k: predict(model, sets[k]).to(device) for k in dict.fromkeys(names)
           if k not in ("forget_test", "retain_test")}
    if "forget_test" in names or "retain_test" in names:
        test = out["test"] if "test" in out else predict(model, sets["test"]).to(device)
        mask = split.forget_test_mask.to(device)
        out.update({k: test[rows] for k, rows in (("forget_test", mask), ("retain_test", ~mask)) if k in names})
    return out


def model_outputs(model: nn.Module, split: Split, sets: Mapping[str, Samples],
                  device: torch.device) -> dict[str, Tensor]:
    """`outputs` on every set in `sets`, memoised per (model weights, data, devices)."""
    key = digest("outputs", model, model_device(model).type, device.type, *(sets[k] for k in sorted(sets)))
    return OUTPUTS.get(key, lambda: outputs(model, split, sets, tuple(sets), device))
