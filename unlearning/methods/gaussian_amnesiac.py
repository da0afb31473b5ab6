"""Gaussian-Amnesiac, the regression analogue of random labels (Tarun et al., "Deep Regression
Unlearning", arXiv 2210.08196), METHODS.md §1.6 / §5.2.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ..config import TrainConfig
from ..data import concat
from ..training import fit
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, IntRange, LogUniform


class GaussianAmnesiacConfig(MethodConfig):
    """Official AgeDB notebook: 1 epoch, Adam 1e-3, L1, on relabelled D_f ∪ D_r.

    Batch 64 instead of 256, as Blindspot, so small tabular sets get more than a couple of steps.
    """

    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(64, ge=1)
    # Tuned on proxy requests (unlearning.calibration): step size and run length.
    search_space: ClassVar[dict[str, Dist]] = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 5)}


@register_method("gaussian_amnesiac", config=GaussianAmnesiacConfig, needs={"forget", "retain"},
                 scenarios={"range", "ids", "random"}, tasks={"regression"})
def gaussian_amnesiac(model: nn.Module, inputs: UnlearnInputs, cfg: GaussianAmnesiacConfig, *,
                      log=None) -> nn.Module:
    """Replace every forget target with a draw from N(mean, std) of all training targets, then fine-tune.

    The statistics come from the whole training set D = D_f ∪ D_r, as in the official notebook.
    """
    forget, retain = inputs.forget, inputs.retain
    y_all = torch.cat([forget.y, retain.y]).float()
    mu, sd = y_all.mean(), y_all.std()
    draws = torch.randn(len(forget), generator=inputs.generator(31)).to(forget.y.device)
    relabelled = forget.with_labels((mu + sd * draws).to(forget.y.dtype))
    recipe = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr,
                         seed=inputs.seed, augment=False)
    torch.manual_seed(inputs.seed)
    return fit(model, concat(relabelled, retain), recipe, log=log, stage="gaussian_amnesiac")
