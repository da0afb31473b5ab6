"""Fine-tune on D_r ("catastrophic forgetting"), METHODS.md §1.2."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from ..config import TrainConfig
from ..requests import Split
from ..training import fit
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, IntRange, LogUniform

# Defaults by task: classification follows the SSD repo, regression the DRU code (L1 loss). The SSD
# optimiser on diabetes (SGD 0.02, momentum 0.9) diverged: retain MAE 12.7 -> 60.7 over 3 seeds.
DEFAULTS = {
    "classification": {"optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4},
    "regression": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
}


class FinetuneConfig(MethodConfig):
    """5 epochs on D_r; unset optimiser fields take the task's defaults (SSD: SGD 0.02, momentum 0.9,
    weight decay 5e-4; DRU regression: Adam 1e-3)."""

    epochs: int = Field(5, ge=1)
    lr: float | None = Field(None, gt=0.0)
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(None, ge=0.0)
    batch_size: int = Field(64, ge=1)

    # Tuned on proxy requests (unlearning.calibration): step size and run length.
    search_space: ClassVar[dict[str, Dist]] = {"lr": LogUniform(1e-3, 0.1), "epochs": IntRange(1, 10)}

    def optimiser_for(self, task: str) -> dict[str, Any]:
        """optimizer, lr and weight_decay: those set here, else the task's defaults."""
        defaults = DEFAULTS[task]
        return {"optimizer": self.optimizer or defaults["optimizer"], "lr": self.lr or defaults["lr"],
                "weight_decay": defaults["weight_decay"] if self.weight_decay is None else self.weight_decay}

    def chosen(self, split: Split, seed: int) -> dict[str, Any]:
        return self.optimiser_for(split.dataset.task)


@register_method("finetune", config=FinetuneConfig, needs={"retain"}, tasks={"classification", "regression"})
def finetune(model: nn.Module, inputs: UnlearnInputs, cfg: FinetuneConfig, *, log=None) -> nn.Module:
    """Keep training the original model on the retain set with the task loss."""
    recipe = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, momentum=cfg.momentum,
                         seed=inputs.seed, **cfg.optimiser_for(inputs.task))
    return fit(model, inputs.retain, recipe, log=log, stage="finetune")
