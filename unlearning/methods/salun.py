"""SalUn: saliency unlearning (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR 2024). METHODS.md §1.11.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data import Samples
from ..training import autocast, make_optimizer, optimize, supervised_loss, task_loss
from ._common import random_other_labels
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform, Uniform


class SalunConfig(MethodConfig):
    """Official CIFAR-10 (random 10 %) defaults: 10 epochs, SGD lr 0.1 (ours 0.02, below), momentum 0.9, wd 5e-4, bs 256, 50 % mask.

    Changed: random labels are drawn among the *wrong* classes (outside the forgotten ones for class
    requests), not uniformly over all classes as the official RL does. With uniform labels one in ten
    targets is the true class, and on digits (class 3, small CNN, seeds 0-2) forget-train accuracy stayed
    at 0-12 % with lr 0.1 and 6-69 % with lr 0.05; wrong labels give 0 % on every seed with retain-test
    96.5-98.1 % (original 98.4 %). `random_labels='uniform'` restores the official draw.

    Changed: lr 0.02 instead of 0.1 (the paper tunes lr per scenario). On MNIST (class 3, cnn width 16)
    lr 0.1 kept retain accuracy at 93.4 % (oracle 99.5 %), lr 0.02 at 99.0 %, both forgetting fully; on
    digits (class 3, cnn) retain-test 92.2 % with lr 0.1, 97.7 % with 0.02 (original 98.4 %).
    """

    mask_fraction: float = Field(0.5, gt=0.0, le=1.0)  # share of all weights kept salient (global ranking)
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.02, gt=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    batch_size: int = Field(256, ge=1)
    # 'uniform': any class, the true one included (official RL); 'wrong': a random wrong label, outside the
    # forgotten classes for class requests (the Amnesiac convention of random_label).
    random_labels: Literal["uniform", "wrong"] = "wrong"
    # Tuned on proxy requests (unlearning.calibration): step size (the paper tunes it per scenario) and the
    # salient share.
    search_space: ClassVar[dict[str, Dist]] = {
        "lr": LogUniform(1e-3, 0.2),
        "mask_fraction": Uniform(0.1, 0.9),
    }


def saliency_mask(model: nn.Module, forget: Samples, fraction: float, batch_size: int = 256) -> list[Tensor]:
    """Boolean mask per parameter: the `fraction` of weights with the largest |∇ CE(D_f)|, ranked globally.

    The gradient is summed over forget batches in eval mode; the model is not changed.
    """
    params = list(model.parameters())
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for xb, yb in forget.batches(batch_size, shuffle=False):
        with autocast(device):
            loss = task_loss(model(xb), yb)
        for g, d in zip(grads, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
            if d is not None:
                g += d.detach().float()
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads])  # [total params]
    k = max(1, int(round(fraction * flat.numel())))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = [], 0
    for p in params:
        masks.append(keep[start:start + p.numel()].view_as(p))
        start += p.numel()
    return masks


def _random_labels(y: Tensor, inputs: UnlearnInputs, mode: str, gen: torch.Generator) -> Tensor:
    if mode == "uniform":
        return torch.randint(0, inputs.num_classes, (len(y),), generator=gen).to(y.device)
    return random_other_labels(y, inputs.num_classes, gen, inputs.excluded_labels)


@register_method("salun", config=SalunConfig, needs={"forget", "retain"})
def salun(model: nn.Module, inputs: UnlearnInputs, cfg: SalunConfig, *, log=None) -> nn.Module:
    """Random labels on D_f then true labels on D_r each epoch, updating only the salient weights.

    The mask follows the paper: the largest |gradient| is salient. The official `generate_mask.py`
    instead steps an optimizer while accumulating the gradients and sorts ascending before thresholding
    (METHODS.md §1.11 [QUIRK]); that is not reproduced. Non-salient weights are put back to their
    original values and their optimizer state zeroed after every step, so weight decay and momentum
    cannot move them (the official fix, issue #32 / PR #33).
    """
    forget, retain = inputs.forget, inputs.retain
    params = list(model.parameters())
    masks = saliency_mask(model, forget, cfg.mask_fraction, cfg.batch_size)
    original = [p.detach().clone() for p in params]
    frozen = [~m for m in masks]
    # Mask the gradients in autograd, so clipping and the optimizer see only the salient part.
    hooks = [p.register_hook(lambda g, m=m: g * m) for p, m in zip(params, masks, strict=True)]
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    @torch.no_grad()
    def restore_frozen() -> None:
        for p, o, f in zip(params, original, frozen, strict=True):
            p[f] = o[f]
            for state in opt.state.get(p, {}).values():
                if isinstance(state, Tensor) and state.shape == p.shape:
                    state[f] = 0  # momentum / Adam moments of frozen weights

    gen = inputs.generator(6)
    try:
        for epoch in range(cfg.epochs):
            y_rand = _random_labels(forget.y, inputs, cfg.random_labels, gen)  # redrawn every epoch
            relabelled = forget.with_labels(y_rand)
            f_loss = optimize(model, supervised_loss, relabelled.batches(cfg.batch_size, generator=gen), opt,
                              after_step=restore_frozen)
            r_loss = optimize(model, supervised_loss, retain.batches(cfg.batch_size, generator=gen), opt,
                              after_step=restore_frozen)
            if log:
                log({"stage": "salun", "epoch": epoch + 1, "epochs": cfg.epochs, "forget_loss": f_loss,
                     "retain_loss": r_loss})
    finally:
        for h in hooks:
            h.remove()
    return model
