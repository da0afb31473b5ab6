"""Lightweight machine unlearning (Kongyang Chen, Yiwen Wang, Yao Huang; arXiv 2111.05528, 2021),
METHODS.md §7.

[UNVERIFIED] reconstruction: no official code exists and only the abstract was retrievable ("small
perturbation of the weight of the target model and make it iterate in the direction of the model trained
with the remaining data subset until the contribution of the unlearning data ... is eliminated"; "15 times
faster than retraining"). Both readings of METHODS.md §7 are implemented as `variant`s.

The stopping test READS THE FORGET SET: it is part of the reconstructed algorithm ("until the contribution
... is eliminated"), not hyperparameter tuning. Nothing else looks at forget-set metrics: the perturbation
size, learning rates and step budget are fixed by the config, and the test only decides when to stop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data import Samples
from ..training import make_optimizer, optimize, predict, task_loss
from ._common import cycle
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform


class LightweightConfig(MethodConfig):
    """METHODS.md §7's suggestions: σ 0.01·std, SGD 0.01 momentum 0.9, at most k = 5 epochs; δ 0.02.

    Measured on digits (mlp, seed 0, CPU; see tests/methods/test_random_subset_methods.py): for a random 10 %
    request the test passes at the first check (forget 100 % vs val 98.6 %: digits has almost no
    generalisation gap), 0.01 s against ~2 s for retraining. For class 3 it never passes within 5 epochs:
    fine-tuning on D_r keeps the class (forget-train accuracy 95 % at σ 0.01, 91 % at σ 0.3, 65 % at σ 1.0
    with test accuracy falling to 92.7 %), so variant A is a weak class unlearner; σ stays at the suggested
    "small perturbation" 0.01. Variant B behaves the same (forget 99 % on class 3).
    """

    variant: Literal["perturb_finetune", "toward_reference"] = "perturb_finetune"
    sigma: float = Field(0.01, ge=0.0)  # ε ~ N(0, (sigma · std(θ_tensor))²) per parameter tensor
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(5, ge=1)  # k: the stopping test's budget (in epochs over D_r)
    check_every: int = Field(5, ge=1)  # steps (A) or interpolation iterations (B) between stop tests
    delta: float = Field(0.02, ge=0.0, le=1.0)  # δ of "forget acc ≤ reference acc + δ"
    # Variant B ("toward_reference"): θ_ref = θ_perturbed fine-tuned on a fraction of D_r, then
    # θ ← θ + η (θ_ref − θ) until the stopping test passes (at most max_iters iterations).
    ref_epochs: int = Field(1, ge=1)
    ref_fraction: float = Field(1.0, gt=0.0, le=1.0)
    eta: float = Field(0.2, gt=0.0, le=1.0)
    max_iters: int = Field(20, ge=1)
    # Tuned on proxy requests (unlearning.calibration): perturbation scale and fine-tuning step size.
    search_space: ClassVar[dict[str, Dist]] = {"sigma": LogUniform(1e-3, 1.0), "lr": LogUniform(1e-3, 0.1)}


@torch.no_grad()
def _accuracy(model: nn.Module, samples: Samples) -> float:
    if len(samples) == 0:
        return 0.0
    return float((predict(model, samples).argmax(1) == samples.y).float().mean())


class StoppingTest:
    """forget accuracy ≤ reference accuracy + δ.

    Reference: the current model's accuracy on the validation split ("test accuracy": a held-out sample
    is what a never-seen forget sample should look like) for random / id / sub-class requests. For class
    requests the val accuracy of other classes says nothing about an unseen class: a model that never saw
    it scores 0, so the reference is 0 and the test reads "forget accuracy ≤ δ".
    """

    def __init__(self, inputs: UnlearnInputs, delta: float) -> None:
        self.forget = inputs.forget
        self.val = None if inputs.scenario == "class" else inputs.val
        self.delta = delta
        self.trail: list[dict[str, float]] = []

    def __call__(self, model: nn.Module, step: int) -> bool:
        ref = 0.0 if self.val is None else _accuracy(model, self.val)
        f_acc = _accuracy(model, self.forget)
        self.trail.append({"step": step, "forget_acc": f_acc, "reference_acc": ref})
        return f_acc <= ref + self.delta


def perturb(model: nn.Module, sigma: float, generator: torch.Generator) -> None:
    """θ ← θ + ε, ε ~ N(0, (σ·std(θ_tensor))²) per tensor (tensors with one element use |θ|)."""
    with torch.no_grad():
        for p in model.parameters():
            scale = p.detach().float().std() if p.numel() > 1 else p.detach().float().abs()
            noise = torch.randn(p.shape, generator=generator).to(p.device)
            p.add_((sigma * scale * noise).to(p.dtype))


def _budgeted(batches: Iterator[tuple[Tensor, Tensor]], n: int) -> Iterator[tuple[Tensor, Tensor]]:
    for _ in range(n):
        yield next(batches)


def _perturb_finetune(model: nn.Module, inputs: UnlearnInputs, cfg: LightweightConfig, stop: StoppingTest,
                      gen: torch.Generator) -> tuple[nn.Module, bool]:
    retain = inputs.retain
    stream = cycle(retain, cfg.batch_size, gen)
    opt = make_optimizer(model.parameters(), "sgd", cfg.lr, cfg.momentum, cfg.weight_decay)
    budget = cfg.max_epochs * -(-len(retain) // cfg.batch_size)
    step = 0
    while step < budget:
        n = min(cfg.check_every, budget - step)
        optimize(model, lambda m, x, y: task_loss(m(x), y), _budgeted(stream, n), opt)
        step += n
        if stop(model, step):
            return model, True
    return model, False


def _toward_reference(model: nn.Module, inputs: UnlearnInputs, cfg: LightweightConfig, stop: StoppingTest,
                      gen: torch.Generator) -> tuple[nn.Module, bool]:
    data = inputs.retain if cfg.ref_fraction >= 1.0 else inputs.retain_subset(fraction=cfg.ref_fraction)
    ref = copy.deepcopy(model)
    opt = make_optimizer(ref.parameters(), "sgd", cfg.lr, cfg.momentum, cfg.weight_decay)
    for _ in range(cfg.ref_epochs):
        optimize(ref, lambda m, x, y: task_loss(m(x), y), data.batches(cfg.batch_size, generator=gen), opt)
    ref_state = ref.state_dict()
    for it in range(1, cfg.max_iters + 1):
        with torch.no_grad():
            for name, v in model.state_dict().items():
                if v.dtype.is_floating_point:  # weights and BN statistics; not the step counters
                    v.add_(cfg.eta * (ref_state[name] - v))
        if it % cfg.check_every == 0 or it == cfg.max_iters:
            if stop(model, it):
                return model, True
    return model, False


@register_method("lightweight", config=LightweightConfig, needs={"forget", "retain", "val"},
                 scenarios={"class", "subclass", "random", "ids"})
def lightweight(model: nn.Module, inputs: UnlearnInputs, cfg: LightweightConfig, *, log=None) -> nn.Module:
    """Perturb the weights slightly, then move toward a retain-trained model until the forget set's
    accuracy falls to the held-out level (the stopping test).

    [UNVERIFIED] reconstruction (METHODS.md §7). `perturb_finetune` (variant A): θ_o + ε, then SGD on D_r
    with the stopping test every `check_every` steps, at most `max_epochs`. `toward_reference` (variant B):
    θ_ref = the perturbed θ fine-tuned on D_r, then θ ← θ + η(θ_ref − θ) with the same test.
    The stopping test reads the forget set and the validation split (see `StoppingTest`).
    """
    gen = inputs.generator(71)
    perturb(model, cfg.sigma, gen)
    stop = StoppingTest(inputs, cfg.delta)
    torch.manual_seed(inputs.seed)
    run = _perturb_finetune if cfg.variant == "perturb_finetune" else _toward_reference
    model, stopped = run(model, inputs, cfg, stop, gen)
    if log:
        last = stop.trail[-1] if stop.trail else {}
        log({"stage": f"lightweight/{cfg.variant}", "stopped": stopped, "checks": len(stop.trail), **last})
    return model
