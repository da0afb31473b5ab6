"""Retrain from scratch on D_r: the oracle ("gold model"), METHODS.md §1.1."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from ..config import TrainConfig
from ..models import fresh_copy
from ..requests import Split
from ..training import fit
from .base import MethodConfig, UnlearnInputs, register_method


class RetrainConfig(MethodConfig):
    """The training recipe; `Params` fills it with `params.train` (unless given) so it matches the oracle."""

    recipe: TrainConfig = Field(default_factory=TrainConfig)

    no_search: ClassVar[str] = "retrain is the oracle's own recipe: there is nothing to tune it towards"

    def chosen(self, split: Split, seed: int) -> dict[str, Any]:
        """`augment: None` trains with the dataset's own choice (crop + flip where it makes sense)."""
        augment = split.dataset.augment if self.recipe.augment is None else self.recipe.augment
        return {"recipe": {**self.recipe.model_dump(), "augment": augment}}


@register_method("retrain", config=RetrainConfig, needs={"retain"},
                 tasks={"classification", "regression"})
def retrain(model: nn.Module, inputs: UnlearnInputs, cfg: RetrainConfig, *, log=None) -> nn.Module:
    """Re-initialise every parameter and train with the original recipe on the retain set only.

    A true re-initialisation (a fresh model from the registry), not the SSD repo's head-only reset [QUIRK].
    """
    fresh = fresh_copy(model, seed=cfg.recipe.seed + 7_919 * (inputs.seed + 1))
    return fit(fresh, inputs.retain, cfg.recipe, log=log, stage="retrain")
