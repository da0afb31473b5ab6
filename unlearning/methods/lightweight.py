"""Lightweight machine unlearning (Kongyang Chen, Yiwen Wang, Yao Huang; arXiv 2111.05528, 2021),
METHODS.md §7.

[UNVERIFIED] reconstruction: no official code exists and only the abstract was retrievable ("small
perturbation of the weight of the target model and make it iterate in the direction of the model trained
with the remaining data subset until the contribution of the unlearning data ... is eliminated"; "15 times
faster than retraining"). METHODS.md §7's two readings (A, B) and a third, C, toward a net trained from
scratch on a small part of D_r (the default: the only one that forgets a class), are `variant`s.

The stopping test READS THE FORGET SET: it is part of the reconstructed algorithm ("until the contribution
... is eliminated"), not hyperparameter tuning. Nothing else looks at forget-set metrics: the perturbation
size, learning rates and step budget are fixed by the config, and the test only decides when to stop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data import Samples
from ..training import make_optimizer, optimize, predict, task_loss
from ._common import cycle, fresh_network
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform


class LightweightConfig(MethodConfig):
    """Default: variant C, `toward_scratch`, the reading "perturb, then iterate toward a model trained from
    scratch on a small subset of D_r"; A and B are METHODS.md §7's two readings (σ 0.01·std, SGD 0.01
    momentum 0.9, at most k = 5 epochs, δ 0.02).

    Measured on digits class 3 (CPU, method seeds 0-2; originals: mlp 30 epochs, retain-test 96.5 %; cnn
    15 epochs, 98.4 %; the oracle forgets fully at 96.5 % / 98.4 %; speed-up = oracle time / method time
    in the same process):
    * A and B cannot forget a class: fine-tuning on D_r keeps it (forget-train 95 % at σ 0.01, 65 % at
      σ 1.0 with test accuracy down to 92.7 %; B 99 %).
    * C, with the iteration in weight space (θ ← θ + η(θ_ref − θ)): forgets, but a net trained from another
      init is not linearly connected to θ_o, so the path crosses a loss barrier: retain-test 85.6-93.0 %
      (mlp), 71-84 % (cnn) when forget reaches 0.
    * C in function space (what is kept): steps of KL(θ_ref ‖ θ) on forget batches + CE on retain batches
      (Adam `pull_lr`), the stopping test after every step (every 5: the cnn lost 2-3 more points).
      Forget 0-1.4 % after 2-5 steps; retain-test 95.3-96.5 % (mlp, 20-30x faster than retraining),
      96.9-98.4 % (cnn, 15-17x); on the tests' 15-epoch mlp 92.6-95.3 % (96.1 %), 39-44x. θ_ref: 5 %
      of D_r for 10 epochs (0.25 s on the mlp); 5 epochs left the mlp at 80.5 %, 10 % of D_r cost speed
      and gained nothing. The two batches go through one forward pass: on forget-only batches BatchNorm's
      batch statistics taught the cnn a rule that eval mode did not follow (forget back to 66 % at 20
      steps). Stopping at the test matters: continuing the pull overshoots into the retained classes
      (mlp retain-test 77 % at step 10, back to 96 % at step 20), and retain-only steps after the stop
      brought the class back on the mlp (forget 6-14 % after 10 steps with a fresh optimiser).
    * θ_ref's part of D_r is capped at 1,000 samples (2026-12-01; MNIST cnn width 16, 5-epoch recipe,
      class 3, training seeds 0-2, one CPU thread): 5 % of MNIST's D_r is 2,700 images, and training on
      them was 59 % of the method's time. Gap to the oracle 1.18 / 0.88 at 5.4x retraining's speed
      (seeds 0 / 1) uncapped; 0.58 / 0.74 / 0.40 at 14.0-16.9x capped (2 % of D_r: 0.74 / 0.87; 1 %:
      1.25 / 0.76 at 22x). Digits' 5 % (65 images) is under the cap.
    * Random 10 %: the test passes before any step (digits has no generalisation gap: forget 100 %, val
      98.6 %), so C returns θ_o + ε without training its reference.
    """

    variant: Literal["toward_scratch", "perturb_finetune", "toward_reference"] = "toward_scratch"
    sigma: float = Field(0.01, ge=0.0)  # ε ~ N(0, (sigma · std(θ_tensor))²) per parameter tensor
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(5, ge=1)  # k: the stopping test's budget (in epochs over D_r)
    check_every: int = Field(1, ge=1)  # steps (A, C) or interpolation iterations (B) between stop tests
    delta: float = Field(0.02, ge=0.0, le=1.0)  # δ of "forget acc ≤ reference acc + δ"
    # Forget / val samples the stopping test scores (a fixed seeded subset when larger): its standard error
    # stays under 1.6 points, and on MNIST class 3 the full 6,131 images cost a third of the method's time.
    check_samples: int = Field(1024, ge=1)
    # Variant B ("toward_reference"): θ_ref = θ_perturbed fine-tuned on a fraction of D_r, then
    # θ ← θ + η (θ_ref − θ) until the stopping test passes (at most max_iters iterations).
    ref_epochs: int = Field(1, ge=1)
    ref_fraction: float = Field(1.0, gt=0.0, le=1.0)
    eta: float = Field(0.2, gt=0.0, le=1.0)
    max_iters: int = Field(20, ge=1)
    # Variant C ("toward_scratch"): θ_ref = a fresh network trained on `scratch_fraction` of D_r for
    # `scratch_epochs` (Adam `scratch_lr`); then steps of KL(θ_ref ‖ θ) on forget batches + CE on retain
    # batches (Adam `pull_lr`) until the stopping test passes, at most `max_steps`.
    scratch_fraction: float = Field(0.05, gt=0.0, le=1.0)
    scratch_max_samples: int | None = Field(1000, ge=1)  # cap on that part; None: no cap
    scratch_epochs: int = Field(10, ge=1)
    scratch_lr: float = Field(1e-3, gt=0.0)
    pull_lr: float = Field(1e-3, gt=0.0)
    max_steps: int = Field(100, ge=1)
    # Tuned on proxy requests (unlearning.calibration): perturbation scale and the pull's step size (the
    # default variant's; A and B step at `lr`).
    search_space: ClassVar[dict[str, Dist]] = {"sigma": LogUniform(1e-3, 1.0), "pull_lr": LogUniform(1e-4, 1e-2)}


@torch.no_grad()
def _accuracy(model: nn.Module, samples: Samples) -> float:
    if len(samples) == 0:
        return 0.0
    return float((predict(model, samples).argmax(1) == samples.y).float().mean())


class StoppingTest:
    """forget accuracy ≤ reference accuracy + δ, on at most `samples` forget and val samples.

    Reference: the current model's accuracy on the validation split ("test accuracy": a held-out sample
    is what a never-seen forget sample should look like) for random / id / sub-class requests. For class
    requests the val accuracy of other classes says nothing about an unseen class: a model that never saw
    it scores 0, so the reference is 0 and the test reads "forget accuracy ≤ δ".
    """

    def __init__(self, inputs: UnlearnInputs, delta: float, samples: int, gen: torch.Generator) -> None:
        self.forget = inputs.forget.random_subset(samples, gen)
        self.val = None if inputs.scenario == "class" else inputs.val.random_subset(samples, gen)
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


def _scratch_reference(model: nn.Module, inputs: UnlearnInputs, cfg: LightweightConfig,
                       gen: torch.Generator) -> nn.Module:
    """A fresh network of the same architecture trained briefly on a small random part of D_r; frozen."""
    count = max(1, int(round(cfg.scratch_fraction * len(inputs.retain))))
    data = inputs.retain_subset(count=min(count, cfg.scratch_max_samples or count))
    ref = fresh_network(model, seed=inputs.seed * 7_919 + 5).to(inputs.device)
    opt = make_optimizer(ref.parameters(), "adam", cfg.scratch_lr)
    for _ in range(cfg.scratch_epochs):
        optimize(ref, lambda m, x, y: task_loss(m(x), y), data.batches(cfg.batch_size, generator=gen), opt)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _toward_scratch(model: nn.Module, inputs: UnlearnInputs, cfg: LightweightConfig, stop: StoppingTest,
                    gen: torch.Generator) -> tuple[nn.Module, bool]:
    if stop(model, 0):  # nothing to eliminate: skip the reference too
        return model, True
    ref = _scratch_reference(model, inputs, cfg, gen)
    forget_stream = cycle(inputs.forget, cfg.batch_size, gen)
    retain_stream = cycle(inputs.retain, cfg.batch_size, gen)

    def pull(m: nn.Module, xr: Tensor, yr: Tensor) -> Tensor:
        xf, _ = next(forget_stream)
        with torch.no_grad():
            target = F.softmax(ref(xf).float(), 1)  # [B, C]: what a model that never saw D_f says
        # One forward over both batches: BatchNorm then normalises with mixed statistics, as in eval mode
        # (a forget-only batch's statistics taught the cnn a rule that eval mode did not follow).
        out = m(torch.cat([xf, xr]))
        kl = F.kl_div(F.log_softmax(out[:len(xf)].float(), 1), target, reduction="batchmean")
        return kl + task_loss(out[len(xf):], yr)

    opt = make_optimizer(model.parameters(), "adam", cfg.pull_lr)
    step = 0
    while step < cfg.max_steps:
        n = min(cfg.check_every, cfg.max_steps - step)
        optimize(model, pull, _budgeted(retain_stream, n), opt)
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

    [UNVERIFIED] reconstruction (METHODS.md §7). `toward_scratch` (variant C, default): θ_ref = a fresh
    network trained on a small part of D_r, then steps pulling θ's outputs on D_f toward θ_ref's while
    keeping CE on D_r, with the stopping test every `check_every` steps. `perturb_finetune` (variant A): θ_o + ε, then SGD on D_r
    with the stopping test every `check_every` steps, at most `max_epochs`. `toward_reference` (variant B):
    θ_ref = the perturbed θ fine-tuned on D_r, then θ ← θ + η(θ_ref − θ) with the same test.
    The stopping test reads the forget set and the validation split (see `StoppingTest`).
    """
    gen = inputs.generator(71)
    perturb(model, cfg.sigma, gen)
    stop = StoppingTest(inputs, cfg.delta, cfg.check_samples, inputs.generator(73))
    torch.manual_seed(inputs.seed)
    run = {"toward_scratch": _toward_scratch, "perturb_finetune": _perturb_finetune,
           "toward_reference": _toward_reference}[cfg.variant]
    model, stopped = run(model, inputs, cfg, stop, gen)
    if log:
        last = stop.trail[-1] if stop.trail else {}
        log({"stage": f"lightweight/{cfg.variant}", "stopped": stopped, "checks": len(stop.trail), **last})
    return model
