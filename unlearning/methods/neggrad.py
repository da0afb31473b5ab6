"""NegGrad: gradient ascent on the forget set, METHODS.md §1.3."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor, nn

from ..training import make_optimizer, optimize, task_loss
from ._common import StepBudget
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, IntRange, LogUniform


class NegGradConfig(MethodConfig):
    """No official defaults exist [UNVERIFIED]; METHODS.md suggests a low-LR SGD for 1-5 epochs with clipping.

    We run a fixed budget (no early stopping on forget accuracy: that would tune on forget metrics).
    Measured on digits/MLP, class 3 (forget / retain-test acc; oracle 0.0 / 0.965): lr 0.01 x 5 epochs
    0.78 / 0.98; lr 0.005 1.0 / 0.97; lr 0.02 x 5 epochs 0.0 / 0.96, hence lr 0.02.
    At most `max_steps` steps (15 = digits' 5 epochs of 3 batches, so that run is unchanged). On MNIST
    (class 3, cnn width 16; oracle retain 99.5 %) lr 0.02 still collapses the model within 15 steps (retain
    11.9 %; 8 steps 65.3 %), lr 0.005 forgets (forget 2.6 %, retain 87.9 %), lr 0.002 does not (forget
    73.7 %). BatchNorm in eval mode during the ascent did not help (retain 12.6 %). The edge is model-specific.
    Nor does stopping early help there: along the ascent (3-epoch recipe, training seed 0; oracle retain
    99.2 %), forget reaches 2.3 % at step 7 of lr 0.02 with retain at 79.9 %, and 2.4 % at step 16 of lr
    0.005 with retain at 79.6 %. The lr sets the pace, not the path: pure ascent loses ~20 retain points by
    the time an MNIST class is gone, whatever its budget (calibrated: 11-15 points of average gap).
    """

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1)
    grad_clip: float = Field(1.0, gt=0.0)
    # Ascent is unbounded, so the damage grows with the number of steps, not with the number of epochs:
    # the budget is `epochs` passes over D_f or `max_steps` steps, whichever is fewer (None: no cap).
    max_steps: int | None = Field(15, ge=1)
    # Tuned on proxy requests (unlearning.calibration): step size and the ascent's step cap (the damage grows
    # with steps).
    search_space: ClassVar[dict[str, Dist]] = {
        "lr": LogUniform(1e-3, 0.1),
        "max_steps": IntRange(5, 60, log=True),
    }


def _ascent(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return -task_loss(model(x), y)


@register_method("neggrad", config=NegGradConfig, needs={"forget"})
def neggrad(model: nn.Module, inputs: UnlearnInputs, cfg: NegGradConfig, *, log=None) -> nn.Module:
    """Ascend the cross-entropy of the forget set (minimise -CE), with gradient-norm clipping."""
    forget = inputs.forget
    gen = inputs.generator()
    opt = make_optimizer(model.parameters(), "sgd", cfg.lr, cfg.momentum)
    budget = StepBudget(cfg.max_steps)
    for epoch in range(cfg.epochs):
        loss = optimize(model, _ascent, budget.take(forget.batches(cfg.batch_size, generator=gen)), opt,
                        grad_clip=cfg.grad_clip)
        if log:
            log({"stage": "neggrad", "epoch": epoch + 1, "epochs": cfg.epochs, "loss": loss})
        if budget.spent:
            break
    return model
