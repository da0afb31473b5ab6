"""∇τ: adaptive gradient ascent on D_f + descent on D_r (Trippa et al., "∇τ: Gradient-based and
Task-Agnostic machine Unlearning", arXiv 2403.14339, ICML 2024 NextGenAISafety workshop). METHODS.md §8.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data import Samples
from ..requests import Split
from ..training import autocast, make_optimizer, make_scheduler, optimize, per_sample_loss, task_loss
from ._common import cycle
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform, Uniform


class NablaTauConfig(MethodConfig):
    """Official CIFAR-10 notebook: AdamW 1e-3 (torch's default weight decay 0.01), LinearLR 1 -> 0.1 per
    forget epoch, batch 256, α_0 = (5/3)·forget fraction, ℓ_val every 5 forget epochs, eval mode.
    """

    alpha0: float | None = Field(None, ge=0.0, le=1.0)  # None: (5/3) * forget fraction, capped at 1
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    end_factor: float = Field(0.1, gt=0.0, le=1.0)  # LinearLR's final LR multiplier
    batch_size: int = Field(256, ge=1)
    max_epochs: int = Field(80, ge=1)  # cap on E, the number of forget epochs (the split sweep's cap)
    val_every: int = Field(5, ge=1)  # recompute ℓ_val every this many forget epochs
    train_mode: bool = False  # official main notebooks: net.eval() (BN running statistics frozen)

    # Tuned on proxy requests (unlearning.calibration): step size and the starting forget weight alpha_0.
    search_space: ClassVar[dict[str, Dist]] = {"lr": LogUniform(1e-4, 1e-2), "alpha0": Uniform(0.05, 1.0)}

    def alpha0_for(self, forget_fraction: float) -> float:
        """α_0 as set, else (5/3) · forget fraction capped at 1 (the official notebook's rule)."""
        return self.alpha0 if self.alpha0 is not None else min(1.0, 5.0 / 3.0 * forget_fraction)

    def chosen(self, split: Split, seed: int) -> dict[str, float]:
        return {"alpha0": self.alpha0_for(split.forget_fraction)}


def forget_epochs(n_retain_batches: int, n_forget_batches: int, cap: int) -> int:
    """E = int(n_R / (2 n_F) * 6), capped, at least 1: about 3 passes over D_r in all."""
    return max(1, min(cap, int(n_retain_batches / (2 * n_forget_batches) * 6)))


@torch.no_grad()
def mean_loss(model: nn.Module, samples: Samples, batch_size: int = 1024) -> Tensor:
    """Mean per-sample task loss over `samples`, in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    for xb, yb in samples.batches(batch_size, shuffle=False):
        with autocast(device):
            total += per_sample_loss(model(xb), yb).sum()
    model.train(was_training)
    return total / max(len(samples), 1)


@register_method("nabla_tau", config=NablaTauConfig, needs={"forget", "retain", "val"},
                 tasks={"classification", "regression"},
                 weak_on={"class": "weak unlearning by design: it lifts the forget loss only to the validation "
                                   "loss, so a forgotten class stays about as accurate as unseen test data "
                                   "(digits class 3: forget acc 0.90 vs retrain 0.00)"})
def nabla_tau(model: nn.Module, inputs: UnlearnInputs, cfg: NablaTauConfig, *, log=None) -> nn.Module:
    """Per step: α·ReLU(ℓ_val − ℓ_f)² + (1 − α)·ℓ_r, with α decaying linearly from α_0 to 0 over E epochs.

    Ascent on a forget batch stops once its loss reaches the validation loss, so forget samples end up
    looking like unseen data rather than misclassified ("weak unlearning").
    """
    forget, retain, val = inputs.forget, inputs.retain, inputs.val
    if len(val) == 0:
        raise ValueError("nabla_tau needs a non-empty validation set (request.val_fraction > 0)")
    alpha0 = cfg.alpha0_for(inputs.forget_fraction)
    n_f = -(-len(forget) // cfg.batch_size)
    n_r = -(-len(retain) // cfg.batch_size)
    epochs = forget_epochs(n_r, n_f, cfg.max_epochs)
    gen = inputs.generator(4)
    # One retain batch per forget step; cycling re-draws D_r when exhausted (the notebook's iterator reset).
    retain_stream = cycle(retain, cfg.batch_size, gen)
    opt = make_optimizer(model.parameters(), "adamw", cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, "linear", epochs, end_factor=cfg.end_factor)  # stepped per forget epoch
    alpha, l_val = alpha0, torch.zeros(())

    def loss_fn(m: nn.Module, xf: Tensor, yf: Tensor) -> Tensor:
        xr, yr = next(retain_stream)
        l_f = task_loss(m(xf), yf)
        l_r = task_loss(m(xr), yr)
        return alpha * torch.relu(l_val - l_f).pow(2) + (1 - alpha) * l_r

    for epoch in range(epochs):
        if epoch % cfg.val_every == 0:
            l_val = mean_loss(model, val)  # a constant between refreshes
        loss = optimize(model, loss_fn, forget.batches(cfg.batch_size, generator=gen), opt,
                        train_mode=cfg.train_mode)
        sched.step()
        if log:
            log({"stage": "nabla_tau", "epoch": epoch + 1, "epochs": epochs, "loss": loss, "alpha": alpha,
                 "val_loss": float(l_val)})
        alpha = max(0.0, alpha - alpha0 / epochs)
    return model
