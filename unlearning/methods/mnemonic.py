"""One-shot unlearning with mnemonic codes (Yamashita, Yamada, Shibata; ACML 2024, arXiv 2306.05670),
METHODS.md §6.2. Official code: `tomyamkum/OneShotMU-with-MNCode:main.py:forget`, `utils.py:get_fishers`.

The model must have been trained with class codes mixed in (`unlearning.mnemonic_codes`); the codes are
stored with it as `model.extra['mnemonic_codes']`. Unlearning reads the C codes and no real data: the
class impressions that size its step are synthesised from the model.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from .base import MethodConfig, UnlearnInputs, register_method
from .mnemonic_step import choose_step, code_fishers, fisher_ratio, impression_probe, lambda_grid, unit_steps
from .space import Dist, LogUniform, Uniform


class MnemonicConfig(MethodConfig):
    """Two ways to size the perturbation along r = F_f / F_r (Fishers from the class codes).

    `scale='official'`: θ ± s·r with s = min(λ1, λ2 / max r) per tensor (official values per dataset:
    MNIST-MLP 1e-3 / 10, CIFAR-10 ResNet18 1e-5 / 1e4, CUB 1e-4 / 1, STN 1e-5 / 100; the defaults are the
    MNIST ones). `scale='impressions'` (default, a deviation): θ ± λ·rms(θ_tensor)·min(r / τ, 1), τ = a
    quantile of r over all parameters (`ratio_quantiles`, tried in order), λ walked up a geometric grid (8
    per doubling) until the forget class's impressions (`impressions_per_class` error-minimising noise
    inputs per class, optimised on θ_o: no data) are, at their median, no surer of their class than θ_o
    was of it on the kept classes' impressions (times `target_scale`), or until the kept impressions grow
    unsure of their class (mean own-class probability below `keep_prob` of θ_o's), whichever comes first;
    a walk also ends one doubling of λ after its last progress; the sign and τ whose
    walk forgets furthest win (ties: θ−, as the official rule). One Fisher pass on the codes, 40 noise
    steps, then forwards of the impressions only.

    Why: the official rule moved only pooled-head models (r's tail reaches 1e9-1e11, so λ2 / max r binds;
    digits flat cnn forget 99 % at λ1 ≤ 1e-2, 4 % at 0.1 with retain 37 %; mlp 19 % for every λ1 ≥ 0.1),
    and the λ that forgets differs by model (along τ99: digits mlp ~1.3, flat cnn ~2.5, MNIST cnn ~1.6).
    The previous rule judged λ on the forget *code*'s own probability, which does not scale: digits loses
    the class near p(code) 1e-3, an MNIST cnn (5 epochs, width 16) near 1e-44 (at the default 1e-3 it kept
    94 % of the class; calibrated, 65 ± 48 %). Impressions follow the real class on both. Along τ99 / θ−
    (training seed 0; "forget" = forget-train accuracy, "retain" / "test" = retain / test accuracy): on
    MNIST half of the forget impressions change class at λ 0.67 (78 % of the class left) and their target
    (log10 p -14.5) is reached at λ 1.9, where the class is gone (retain 99.1 %, test 89.0 %); on the
    digits flat cnn the target (-5.4) is out of reach before the kept impressions break (at λ 3.2), and
    the class is gone from λ 2.7; the digits mlp's impressions bottom out at -5.4 (target -6.8), the
    class gone from λ 1.35. Measured with these defaults (one CPU thread): MNIST cnn (5 epochs, width 16,
    class 3), training seeds 0-2: forget 0 %, retain 99.1-99.3 %, test 88.6-89.1 %, 5-7 s on a loaded core
    (retraining: ~62 s); digits (15 epochs) flat cnn: forget 0 / 2.7 / 0 %, retain 98.1 / 100 / 97.7 %; mlp:
    forget 0 %, retain 98.0-99.8 %; the digits cnn (20 epochs, seed 0) on each other class: forget 0-0.7 %,
    retain 96.7-100 % (mean 98.9 %). `keep_prob` 0.85 on the mean probability, not a share of kept
    impressions that still get their class (0.97): that share stayed ≥ 97 % on classes 0 and 9 while retain
    fell to 93.0 / 91.5 % (mean over the 9 classes 96.8 %); the mean probability falls with retain (in the
    walks of classes 0, 4 and 9 retain stayed ≥ 97 % while it was ≥ 0.85). The contract tests' cnn under
    ATEN_CPU_CAPABILITY=default is the tight case: its class is 5.5 % left at λ 2.69 (mean 0.878) and gone
    at 2.93 (0.816, retain-test 91.4 %); AVX-512: λ 3.2, 0 %, retain-test 97.7 %.

    Classes the training set lacks (`Split.absent_classes`) are left out of F_r and of the kept impressions:
    their codes were never learned (digits cnn without class 3: p 0.001 that code 3 is a 3, argmax class 0;
    every other code p 0.999 of its own class). Calibration meets them on every class request: its universe has
    no sample of the live class. Counted as kept, they broke the keep test at the first λ: on the digits
    universe without class 3 (20 epochs, training seed 0) the default scored 25.9 / 48.3 / 18.8 points on
    the proxies of classes 8 / 4 / 1 (cnn, 70-99 % of each class left) and 0.0 / 60.9 / 5.9 (mlp, class 4
    collapsed); now 0.12 / 0.33 / 3.53 and 0.02 / 0.12 / 6.94. Live models hold every class (the codes of
    the digits and MNIST bases get p ≥ 0.98) and a live split lacks none, so nothing changes there.
    """

    scale: Literal["impressions", "official"] = "impressions"
    lambda1: float = Field(1e-3, gt=0.0)  # official rule only
    lambda2: float = Field(10.0, gt=0.0)  # official rule only
    fisher_floor: float = Field(1e-16, gt=0.0)  # the official initial value of both Fishers
    # τ: r is divided by this quantile of itself, then capped at 1; tried in order until the class goes
    ratio_quantiles: tuple[float, ...] = Field((0.99, 0.98, 0.95), min_length=1)
    impressions_per_class: int = Field(32, ge=1)  # per forget class
    kept_impressions_per_class: int = Field(16, ge=1)
    impression_steps: int = Field(40, ge=1)  # Adam steps of the error-minimising noise (UNSIR's 40)
    # the forget impressions' target log-probability, times θ_o's on the kept impressions (> 1: further)
    target_scale: float = Field(1.0, gt=0.0)
    keep_prob: float = Field(0.85, gt=0.0, le=1.0)  # kept impressions' mean own-class probability, vs θ_o
    lambda_min: float = Field(0.1, gt=0.0)  # grid of λ (in units of each tensor's weight rms)
    lambda_max: float = Field(16.0, gt=0.0)
    grid_per_doubling: int = Field(8, ge=1)  # grid points per factor 2; a walk that has not improved
    # for one doubling of λ stops
    # Tuned on proxy requests (unlearning.calibration): how far the forget impressions must go and how many
    # kept impressions may change class on the way.
    search_space: ClassVar[dict[str, Dist]] = {"target_scale": LogUniform(0.25, 4.0),
                                               "keep_prob": Uniform(0.6, 0.98)}

    @model_validator(mode="after")
    def _grid(self) -> MnemonicConfig:
        if not all(0.0 < q < 1.0 for q in self.ratio_quantiles):
            raise ValueError(f"ratio_quantiles must lie in (0, 1); got {list(self.ratio_quantiles)}")
        if self.lambda_min >= self.lambda_max:
            raise ValueError(f"lambda_min ({self.lambda_min}) must be < lambda_max ({self.lambda_max})")
        return self


@torch.no_grad()
def _code_score(model: nn.Module, codes: Tensor, forget: list[int], absent: list[int]) -> float:
    """(1 − forget accuracy) + remaining accuracy, on the codes only (the official selection rule); classes
    the model did not hold to begin with (`absent`) are left out of the remaining ones."""
    model.eval()
    pred = model(codes).argmax(1).cpu()
    hit = pred == torch.arange(len(codes))
    is_f = torch.zeros(len(codes), dtype=torch.bool)
    is_f[forget] = True
    kept = ~is_f
    kept[list(absent)] = False
    return float(1 - hit[is_f].float().mean() + hit[kept].float().mean())


def _official_steps(f_f: dict[str, Tensor], f_r: dict[str, Tensor], cfg: MnemonicConfig) -> dict[str, Tensor]:
    """s·r per tensor, s = min(λ1, λ2 / max r): the largest step ≤ λ2, the scale ≤ λ1."""
    steps = {}
    for n in f_f:
        r = fisher_ratio(f_f[n] + cfg.fisher_floor, f_r[n] + cfg.fisher_floor)
        steps[n] = min(cfg.lambda1, cfg.lambda2 / float(r.max())) * r
    return steps


def _official(model: nn.Module, codes: Tensor, forget: list[int], absent: list[int], cfg: MnemonicConfig,
              f_f: dict[str, Tensor], f_r: dict[str, Tensor], log) -> nn.Module:
    """θ ± s·r, the candidate with the better code score (ties: θ−, as `if score1 > score2`)."""
    noise = _official_steps(f_f, f_r, cfg)
    candidates = []
    for sign in (1.0, -1.0):
        cand = copy.deepcopy(model) if sign > 0 else model
        with torch.no_grad():
            for n, p in cand.named_parameters():
                if n in noise:
                    p.add_(sign * noise[n])
        candidates.append((_code_score(cand, codes, forget, absent), sign, cand))
    best = candidates[0] if candidates[0][0] > candidates[1][0] else candidates[1]
    if log:
        log({"stage": "mnemonic", "rule": "official", "score_plus": candidates[0][0],
             "score_minus": candidates[1][0], "sign": best[1]})
    return best[2]


@register_method("mnemonic", config=MnemonicConfig, needs={"mnemonic"}, scenarios={"class"})
def mnemonic(model: nn.Module, inputs: UnlearnInputs, cfg: MnemonicConfig, *, log=None) -> nn.Module:
    """Perturb every parameter along ±F_f/F_r (Fishers from the class codes) and keep the sign that forgets.

    One-shot: C backward passes for the Fishers, then forward passes on class impressions to size the step
    and choose the sign (see MnemonicConfig); the official rule chooses θ+ or θ− on the codes. No real
    data. Deterministic for a given seed. Refuses a model trained without codes (`inputs.codes` raises
    ValueError).
    """
    codes = inputs.codes.to(inputs.device).float()  # [C, *in_shape]
    forget = sorted(inputs.forget_classes or [])
    if not forget:
        raise ValueError("mnemonic needs the forget class ids (a class request)")
    if len(codes) != inputs.num_classes:
        raise ValueError(f"mnemonic codes hold {len(codes)} classes but the model has {inputs.num_classes}")
    absent = inputs.absent_classes
    if log and absent:
        log({"stage": "mnemonic", "absent_classes": absent})
    f_f, f_r = code_fishers(model, codes, forget, absent)
    if cfg.scale == "official":
        return _official(model, codes, forget, absent, cfg, f_f, f_r, log)
    probe = impression_probe(model, inputs.num_classes, tuple(inputs.in_shape), forget,
                             (cfg.impressions_per_class, cfg.kept_impressions_per_class),
                             cfg.impression_steps, cfg.target_scale, inputs.generator(), inputs.device, absent)
    steps = unit_steps(model, f_f, f_r, cfg.fisher_floor, cfg.ratio_quantiles)
    grid = lambda_grid(cfg.lambda_min, cfg.lambda_max, cfg.grid_per_doubling)
    choose_step(model, probe, steps, cfg.ratio_quantiles, grid, cfg.keep_prob, cfg.grid_per_doubling, log)
    return model
