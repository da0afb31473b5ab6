"""Bad Teaching / "Blindspot" (Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks using an Incompetent Teacher", arXiv 2205.08096, AAAI 2023). METHODS.md §3.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data import concat
from ..models import fresh_copy
from ..requests import Split
from ..training import make_optimizer, optimize
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, IntRange, LogUniform


class BadTeachingConfig(MethodConfig):
    """Official: T 1, batch 256, 30 % of D_r, Adam; 1 epoch at lr 1e-4 there, 5 epochs at 1e-3 here.

    Why: the official epoch is ~3 Adam steps on digits (146 forget + 387 retain samples at batch 256) and
    left forget-train accuracy at 99-100 % (class 3, CNN and MLP, seeds 0-2); 10 epochs at 1e-4 still left 19-34 %, 20 epochs 10-14 %.
    5 epochs at 1e-3 (~10 steps) reach 0-2 % (CNN, retain-test 98.1-98.4 % vs 98.4 %; MLP 0 %, 92.2-94.9 %
    vs 96.1 %). Keep the official 1 epoch at 1e-4 on CIFAR-size sets.
    """

    epochs: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    temperature: float = Field(1.0, gt=0.0)
    batch_size: int = Field(256, ge=1)
    retain_fraction: float = Field(0.3, gt=0.0, le=1.0)
    student_train_mode: bool = True  # official: the student is never put in eval mode
    teacher_seed: int | None = None  # init seed of the incompetent teacher; None: the method seed

    # Tuned on proxy requests (unlearning.calibration): step size and run length.
    search_space: ClassVar[dict[str, Dist]] = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10)}

    def teacher_seed_for(self, seed: int) -> int:
        return seed if self.teacher_seed is None else self.teacher_seed

    def chosen(self, split: Split, seed: int) -> dict[str, int]:
        return {"teacher_seed": self.teacher_seed_for(seed)}


def bad_teaching_loss(student: Tensor, competent: Tensor, incompetent: Tensor, flag: Tensor,
                      temperature: float) -> Tensor:
    """KL(t || softmax(S/T)) with t = flag * softmax(T_d/T) + (1 - flag) * softmax(θ_o/T).

    Logits: [B, C]; flag: [B] (1 = forget sample). Reduction 'mean' (over B * C), the official quirk.
    """
    f = flag.float().unsqueeze(1)  # [B, 1]
    target = f * F.softmax(incompetent.float() / temperature, 1) + (1 - f) * F.softmax(
        competent.float() / temperature, 1)
    kl = F.kl_div(F.log_softmax(student.float() / temperature, 1), target, reduction="sum")
    return kl / target.numel()  # 'mean' spelled out: torch will turn reduction='mean' into 'batchmean'



@register_method("bad_teaching", config=BadTeachingConfig, needs={"forget", "retain_subset"})
def bad_teaching(model: nn.Module, inputs: UnlearnInputs, cfg: BadTeachingConfig, *, log=None) -> nn.Module:
    """Distil from the original on a retain subset and from a randomly initialised copy on the forget set.

    Labels are not used: each sample carries only its forget flag (stored in the label slot).
    """
    forget, retain = inputs.forget, inputs.retain_subset(fraction=cfg.retain_fraction)
    data = concat(forget.with_labels(torch.ones_like(forget.y)), retain.with_labels(torch.zeros_like(retain.y)))
    competent = copy.deepcopy(model).eval()
    incompetent = fresh_copy(model, seed=cfg.teacher_seed_for(inputs.seed)).eval()
    for p in [*competent.parameters(), *incompetent.parameters()]:
        p.requires_grad_(False)

    def loss_fn(m: nn.Module, x: Tensor, flag: Tensor) -> Tensor:
        with torch.no_grad():
            good, bad = competent(x), incompetent(x)
        return bad_teaching_loss(m(x), good, bad, flag, cfg.temperature)

    opt = make_optimizer(model.parameters(), "adam", cfg.lr)
    gen = inputs.generator(3)
    for epoch in range(cfg.epochs):
        loss = optimize(model, loss_fn, data.batches(cfg.batch_size, generator=gen), opt,
                        train_mode=cfg.student_train_mode)
        if log:
            log({"stage": "bad_teaching", "epoch": epoch + 1, "epochs": cfg.epochs, "loss": loss})
    return model
