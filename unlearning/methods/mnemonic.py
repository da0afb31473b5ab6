"""One-shot unlearning with mnemonic codes (Yamashita, Yamada, Shibata; ACML 2024, arXiv 2306.05670),
METHODS.md §6.2. Official code: `tomyamkum/OneShotMU-with-MNCode:main.py:forget`, `utils.py:get_fishers`.

The model must have been trained with class codes mixed in (`unlearning.mnemonic_codes`); the codes are
stored with it as `model.extra['mnemonic_codes']`. Unlearning reads only the C codes: no real data.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .base import MethodConfig, UnlearnInputs, register_method
from .space import Dist, LogUniform


class MnemonicConfig(MethodConfig):
    """λ1 / λ2 bound the perturbation: scale s = min(λ1, λ2 / max r) per tensor.

    Official values per dataset: MNIST-MLP 1e-3 / 10, CIFAR-10 ResNet18 1e-5 / 1e4, CUB 1e-4 / 1,
    STN 1e-5 / 100. The defaults are the MNIST ones; measured on digits (cnn trained with t_mix 0.1,
    class 3; see tests/methods/test_zero_shot_methods.py) they forget fully with retain-test accuracy within
    a few points of the original on the cnn with head='gap'. With the default flat head they do not:
    forget-train 96.6 % at λ1 1e-3 and 97.3 % at 3e-2 (retain-test 90.3 % there); on the digits MLP λ1 0.1
    was needed (forget 19 %). The perturbation's reach depends on the architecture; tune λ1 per model.
    """

    lambda1: float = Field(1e-3, gt=0.0)
    lambda2: float = Field(10.0, gt=0.0)
    fisher_floor: float = Field(1e-16, gt=0.0)  # the official initial value of both Fishers
    # Tuned on proxy requests (unlearning.calibration): lambda1, the perturbation bound (its reach depends on
    # the architecture).
    search_space: ClassVar[dict[str, Dist]] = {"lambda1": LogUniform(1e-5, 1.0)}


def code_fishers(model: nn.Module, codes: Tensor, forget: list[int]) -> tuple[dict[str, Tensor],
                                                                              dict[str, Tensor]]:
    """Diagonal empirical Fisher of the forget and remaining classes from the codes (one pass per class).

    Returns:
        (F_f, F_r): per-parameter means of (∇θ CE(f(m_c), c))² over forget / remaining classes, without the
        floor (the caller adds it).
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    f_f = {n: torch.zeros_like(p) for n, p in params.items()}
    f_r = {n: torch.zeros_like(p) for n, p in params.items()}
    n_f = n_r = 0
    model.eval()
    for c in range(len(codes)):
        model.zero_grad(set_to_none=True)
        x = codes[c:c + 1]  # [1, *in_shape]: each code is its own batch
        loss = F.cross_entropy(model(x).float().view(1, -1), torch.tensor([c], device=codes.device))
        loss.backward()
        target = f_f if c in forget else f_r
        for n, p in params.items():
            if p.grad is not None:
                target[n] += p.grad.detach() ** 2
        n_f, n_r = (n_f + 1, n_r) if c in forget else (n_f, n_r + 1)
    model.zero_grad(set_to_none=True)
    return ({n: v / max(n_f, 1) for n, v in f_f.items()}, {n: v / max(n_r, 1) for n, v in f_r.items()})


def fisher_ratio(f_f: Tensor, f_r: Tensor) -> Tensor:
    """r = F_f / F_r via exp(log F_f − log F_r); NaN log-ratios -> 0, ±inf -> the largest finite one."""
    log_r = torch.log(f_f) - torch.log(f_r)
    log_r = torch.nan_to_num(log_r, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    finite = log_r[torch.isfinite(log_r)]
    top = finite.max() if finite.numel() else torch.zeros((), device=log_r.device)
    return torch.exp(torch.where(torch.isinf(log_r), top, log_r))


@torch.no_grad()
def _code_score(model: nn.Module, codes: Tensor, forget: list[int]) -> float:
    """(1 − forget accuracy) + remaining accuracy, on the codes only (the official selection rule)."""
    model.eval()
    pred = model(codes).argmax(1).cpu()
    hit = pred == torch.arange(len(codes))
    is_f = torch.zeros(len(codes), dtype=torch.bool)
    is_f[forget] = True
    return float(1 - hit[is_f].float().mean() + hit[~is_f].float().mean())


@register_method("mnemonic", config=MnemonicConfig, needs={"mnemonic"}, scenarios={"class"})
def mnemonic(model: nn.Module, inputs: UnlearnInputs, cfg: MnemonicConfig, *, log=None) -> nn.Module:
    """Perturb every parameter by ±s·F_f/F_r (Fishers from the class codes) and keep the sign that forgets.

    One-shot: C backward passes for the Fishers and 2·C forward passes to choose θ+ or θ−, both on the
    mnemonic codes alone. The perturbation is deterministic, as in the official code. Refuses a model
    trained without codes (`inputs.codes` raises ValueError).
    """
    codes = inputs.codes.to(inputs.device).float()  # [C, *in_shape]
    forget = sorted(inputs.forget_classes or [])
    if not forget:
        raise ValueError("mnemonic needs the forget class ids (a class request)")
    if len(codes) != inputs.num_classes:
        raise ValueError(f"mnemonic codes hold {len(codes)} classes but the model has {inputs.num_classes}")
    f_f, f_r = code_fishers(model, codes, forget)
    noise: dict[str, Tensor] = {}
    for n in f_f:
        r = fisher_ratio(f_f[n] + cfg.fisher_floor, f_r[n] + cfg.fisher_floor)
        scale = min(cfg.lambda1, cfg.lambda2 / float(r.max()))  # largest step <= λ2, scale <= λ1
        noise[n] = scale * r
    candidates = []
    for sign in (1.0, -1.0):
        cand = copy.deepcopy(model) if sign > 0 else model
        with torch.no_grad():
            for n, p in cand.named_parameters():
                if n in noise:
                    p.add_(sign * noise[n])
        candidates.append((_code_score(cand, codes, forget), sign, cand))
    # Ties go to θ−, as the official `if score1 > score2: model1 else model2`.
    best = candidates[0] if candidates[0][0] > candidates[1][0] else candidates[1]
    if log:
        log({"stage": "mnemonic", "score_plus": candidates[0][0], "score_minus": candidates[1][0],
             "sign": best[1]})
    return best[2]
