"""Fine-tune on D_r ("catastrophic forgetting"), METHODS.md §1.2."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..config import TrainConfig
from ..training import fit
from .base import MethodConfig, UnlearnInputs, register_method


class FinetuneConfig(MethodConfig):
    """SSD repo defaults: 5 epochs, SGD lr 0.02, momentum 0.9, weight decay 5e-4."""

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.02, gt=0.0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    batch_size: int = Field(64, ge=1)


@register_method("finetune", config=FinetuneConfig, needs={"retain"}, tasks={"classification", "regression"})
def finetune(model: nn.Module, inputs: UnlearnInputs, cfg: FinetuneConfig, *, log=None) -> nn.Module:
    """Keep training the original model on the retain set with the task loss."""
    recipe = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                         momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=inputs.seed)
    return fit(model, inputs.retain, recipe, log=log, stage="finetune")
