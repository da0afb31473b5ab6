"""SSD: Selective Synaptic Dampening (Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening", AAAI 2024). METHODS.md §1.9.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data import Samples, concat
from ..training import autocast, task_loss
from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform


class SsdConfig(MethodConfig):
    """Official ResNet18 defaults: α (selection_weighting) 10, λ (dampening_constant) 1, batch 64, and the
    official order of D: the retain samples, then the forget samples, unshuffled.

    Order matters because I_D averages squared *batch-mean* gradients. In the official order D_f fills its
    own batches, so I_D ≥ (forget batches / all batches)·I_f for weights only D_f uses, and α must stay
    below about 1/forget share to select them. That is harmless at the official scale: the official
    full-class runs forget 1-5 % of D (a CIFAR-100 or CIFAR-20 class, or one of PinsFaceRecognition's 105
    people, for which a code comment gives α 50, λ 0.1; `src/*_fullclass_exps.sh`), none a tenth. It is a
    knife edge for a 10 % class: on digits (class 3, the cnn with head='gap') α 10 forgets fully with
    retain-test 97.3 % (original 98.4 %) while α 11 leaves 90 % of D_f. 'shuffled' mixes D_f into every
    batch (within-batch dilution squares the share), where α 50 worked on both our models (forget 0 %,
    retain-test 96.1-96.5 % for the CNN and the MLP); in that order α 10 dampens far too much (CNN 21 %).

    At MNIST scale α 10 selects almost nothing for a 10 % class: batch gradients of a trained model are
    mostly noise, so a weight only D_f uses gets I_D ≈ share · I_f in either order and I_f / I_D stays
    below about 1 / share. Measured (MNIST class 3, share 10.2 %, cnn width 16): the largest ratio was 15.5
    (official order; 22.5 shuffled); α 10 selected 79 of 54,778 weights and forgot nothing (forget 99.6 %);
    α 5 forget 64 %, retain 99.6 %; α 3 forget 62 %, retain 89.8 %. On digits (flat-head cnn) the same
    lower α wrecks the model (α 5: retain-test 14 %; α 10: forget 0 %, retain-test 96.5 %), so no single α
    serves both and the official 10 stays; set `selection_weighting` per model.

    Importance over D_r instead of D (no share dilution; not the paper) does not rescue MNIST either
    (3-epoch recipe, training seeds 0 / 1): α 10 selects 3,725 / 257 weights and leaves forget at 49.6 /
    99.8 % (α 5: 54.0 / 99.8 %; λ 0.1 moves it by at most 4 points). The class rides on weights D_r uses
    too, so it was not adopted.

    No α reaches the oracle on an MNIST class (5-epoch recipe, official order, λ 0.01, training seeds
    0 / 1 / 2; `bench/results/floor-mnist-cnn-5ep-ssd.*`): the best α of 2.5-10 for each seed, picked
    with the oracle, is 6.6 points off (α 4.5: 19 % of the class left, retain 96 %), 11.8 (α 2.5: 38 % left,
    retain 94 %) and 50.8 (every α keeps 97 % or more). Seed 0 collapses one step lower (α 4: retain 39 %).
    Shuffled D does no better (α 4-50 by λ 1 / 0.1, `floor-mnist-cnn-5ep-ssd-shuffled.*`): 14.9, 18.5 and
    52.3 points (α 4-6, λ 0.1: 45-55 % of the class left on seeds 0 / 1); α 15 and above changes nothing.
    """

    selection_weighting: float = Field(10.0, gt=0.0)  # α: select parameters with I_f > α · I_D
    dampening_constant: float = Field(1.0, gt=0.0)  # λ: β = min(λ · I_D / I_f, 1)
    batch_size: int = Field(64, ge=1)
    d_order: Literal["retain_then_forget", "shuffled"] = "retain_then_forget"
    # Mode of the importance passes. Eval keeps BatchNorm statistics untouched (no training happens).
    train_mode: bool = False
    # Tuned on proxy requests (unlearning.calibration): the selection threshold alpha (a knife edge per model)
    # and the dampening lambda.
    search_space: ClassVar[dict[str, Dist]] = {
        "selection_weighting": LogUniform(1.0, 100.0),
        "dampening_constant": LogUniform(0.1, 10.0),
    }


def importances(model: nn.Module, samples: Samples, batch_size: int, train_mode: bool = False) -> list[Tensor]:
    """Per parameter: mean over mini-batches of (∇θ mean-batch task loss)², one tensor per parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    acc = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.train(train_mode)
    device = next(model.parameters()).device
    n = 0
    for xb, yb in samples.batches(batch_size, shuffle=False):
        with autocast(device):
            loss = task_loss(model(xb), yb)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for a, g in zip(acc, grads, strict=True):
            if g is not None:
                a += g.detach().float().pow(2)
        n += 1
    model.train(was_training)
    return [a / max(n, 1) for a in acc]


@register_method("ssd", config=SsdConfig, needs={"forget", "train"}, tasks={"classification", "regression"},
                 weak_on={"class": "measured: it dampens weights far more important to D_f than to D, and in a "
                                   "small model a tenth-of-D class has almost none; on MNIST cnn class 3 its best "
                                   "α, picked with the oracle, is 6.6-50.8 points off in the official order of D "
                                   "and 14.9-52.3 shuffled (bench/results/floor-mnist-cnn-5ep-ssd.json, "
                                   "bench/results/floor-mnist-cnn-5ep-ssd-shuffled.json)"})
def ssd(model: nn.Module, inputs: UnlearnInputs, cfg: SsdConfig, *, log=None) -> nn.Module:
    """Dampen the parameters far more important to D_f than to D: θ ← min(λ·I_D / I_f, 1)·θ. No training."""
    train, forget = inputs.train, inputs.forget
    if cfg.d_order == "retain_then_forget":  # ConcatDataset((retain, forget)) without shuffling
        train = concat(train.subset(torch.nonzero(~torch.isin(train.ids, forget.ids)).flatten()), forget)
    else:
        train = train.subset(torch.randperm(len(train), generator=inputs.generator(7)))
    alpha = cfg.selection_weighting
    imp_d = importances(model, train, cfg.batch_size, cfg.train_mode)
    imp_f = importances(model, forget, cfg.batch_size, cfg.train_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    selected = total = 0
    with torch.no_grad():
        for p, i_d, i_f in zip(params, imp_d, imp_f, strict=True):
            chosen = i_f > alpha * i_d  # bool, shape of p
            beta = (cfg.dampening_constant * i_d / i_f.clamp_min(torch.finfo(i_f.dtype).tiny)).clamp(max=1.0)
            p[chosen] = p[chosen] * beta[chosen].to(p.dtype)
            selected += int(chosen.sum())
            total += p.numel()
    if log:
        log({"stage": "ssd", "alpha": alpha, "selected": selected, "selected_fraction": selected / max(total, 1)})
    return model
