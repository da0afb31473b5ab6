"""mnemonic's one-shot step: its direction from the class codes' Fishers (METHODS.md §6.2), its length from
a walk along λ judged on class impressions (MnemonicConfig says why). Data-free: the impressions are inputs
the original itself is sure belong to each class.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .emmn import EMMNConfig, optimise_noise


def code_fishers(model: nn.Module, codes: Tensor, forget: list[int],
                 absent: Collection[int] = ()) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Diagonal empirical Fisher of the forget and remaining classes from the codes (one pass per class);
    `absent` classes (`Split.absent_classes`: never learned, their codes say nothing) are in neither.

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
        if c in absent:
            continue
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


@dataclass(frozen=True)
class ImpressionProbe:
    """Class impressions of every class and what the walk compares them with.

    `target[c]`: the log-probability of forget class c that θ_o gives the *kept* classes' impressions
    (their median, times `target_scale`): an input the model holds to be "not c". The forget class counts
    as forgotten once the median impression of c is at most that sure of c.
    """

    inputs: Tensor  # [C·k, *in_shape]
    labels: Tensor  # [C·k]
    forget: list[int]
    target: Tensor  # [len(forget)], log-probabilities
    kept: Tensor  # [C·k] bool: impressions of the kept classes
    keep_base: float  # θ_o's mean own-class probability over the kept impressions
    start: float  # θ_o's score (where every walk begins)

    @torch.no_grad()
    def score(self, model: nn.Module) -> tuple[float, float]:
        """(max over forget classes of median log p(c | impressions of c) − target[c]: ≤ 0 = forgotten,
        the kept impressions' mean probability of their own class, relative to θ_o's)."""
        model.eval()
        logp = F.log_softmax(model(self.inputs).float(), 1)
        return (_forget_gap(logp, self.labels, self.forget, self.target),
                _own_mean(logp[self.kept], self.labels[self.kept]) / max(self.keep_base, 1e-12))


def impression_probe(model: nn.Module, num_classes: int, in_shape: tuple[int, ...], forget: list[int],
                     counts: tuple[int, int], steps: int, target_scale: float, generator: torch.Generator,
                     device: torch.device, absent: Collection[int] = ()) -> ImpressionProbe:
    """Optimise error-minimising noise inputs on θ_o (eval mode: BN untouched), `counts` = (per forget
    class, per kept class); `absent` classes get none."""
    per = torch.tensor([counts[0] if c in forget else 0 if c in absent else counts[1] for c in range(num_classes)],
                       device=device)
    labels = torch.arange(num_classes, device=device).repeat_interleave(per)
    noise_cfg = EMMNConfig(noise_steps=steps, min_noise_l2=0.0)
    inputs = optimise_noise(model, labels, in_shape, noise_cfg, generator, maximise=False)
    model.eval()
    with torch.no_grad():
        logp = F.log_softmax(model(inputs).float(), 1)
    kept = ~torch.isin(labels, torch.tensor(forget, device=device))
    target = torch.stack([logp[kept, c].median() for c in forget]) * target_scale
    return ImpressionProbe(inputs, labels, forget, target, kept, _own_mean(logp[kept], labels[kept]),
                           _forget_gap(logp, labels, forget, target))


def _forget_gap(logp: Tensor, labels: Tensor, forget: list[int], target: Tensor) -> float:
    """Max over forget classes c of median log p(c | impressions of c) − target[c]; ≤ 0: forgotten."""
    return max(float(logp[labels == c, c].median()) - float(t) for c, t in zip(forget, target, strict=True))


def _own_mean(logp: Tensor, labels: Tensor) -> float:
    """Mean probability each input gives its own label; logp [N, C], labels [N]."""
    return float(logp.gather(1, labels.view(-1, 1)).exp().mean())


def unit_steps(model: nn.Module, f_f: dict[str, Tensor], f_r: dict[str, Tensor], fisher_floor: float,
               quantiles: tuple[float, ...]) -> list[dict[str, Tensor]]:
    """Per τ in `quantiles`: rms(θ_tensor)·min(r / τ, 1), τ = that quantile of r over every parameter;
    λ = 1 moves the parameters most specific to the forget classes by their tensor's typical weight size."""
    ratios = {n: fisher_ratio(f_f[n] + fisher_floor, f_r[n] + fisher_floor) for n in f_f}
    flat = torch.cat([r.flatten().float() for r in ratios.values()])
    params = dict(model.named_parameters())
    rms = {n: params[n].detach().pow(2).mean().sqrt() for n in ratios}
    out = []
    for q in quantiles:
        tau = flat.kthvalue(max(1, math.ceil(q * flat.numel()))).values
        out.append({n: rms[n] * torch.clamp(r / tau, max=1.0) for n, r in ratios.items()})
    return out


@torch.no_grad()
def place(model: nn.Module, base: dict[str, Tensor], steps: dict[str, Tensor], coef: float) -> None:
    """θ = θ_o + coef·step, in place, for the parameters that have a step."""
    for n, p in model.named_parameters():
        if n in steps:
            p.copy_(base[n] + coef * steps[n])


def lambda_grid(low: float, high: float, per_doubling: int) -> list[float]:
    """low, low·2^(1/k), ... up to high (inclusive, to rounding)."""
    grid, k = [], 0
    while (lam := low * 2 ** (k / per_doubling)) <= high * (1 + 1e-9):
        grid.append(lam)
        k += 1
    return grid


def walk(model: nn.Module, base: dict[str, Tensor], steps: dict[str, Tensor], probe: ImpressionProbe,
         grid: list[float], sign: float, keep_prob: float, patience: int) -> tuple[float, float]:
    """Up the grid: the first λ whose forget impressions reach their target, else the most forgotten λ before
    the kept impressions grow unsure of their class (mean below `keep_prob` of θ_o's) or `patience` points pass
    without progress once it has started to move. Returns (λ, score)."""
    best, since, moved = None, 0, False
    for lam in grid:
        place(model, base, steps, sign * lam)
        score, kept = probe.score(model)
        if kept < keep_prob:
            break
        if best is None or score < best[1]:
            best, since = (lam, score), 0
            moved = moved or score < probe.start - 0.01
        elif moved and (since := since + 1) >= patience:  # a flat start (saturated impressions) is no stall
            break
        if score <= 0.0:
            break
    return best if best is not None else (grid[0], probe.score(model)[0])


def choose_step(model: nn.Module, probe: ImpressionProbe, all_steps: list[dict[str, Tensor]],
                quantiles: tuple[float, ...], grid: list[float], keep_prob: float, patience: int,
                log) -> float:
    """Each τ in turn, both signs (θ− first: ties go to it, as the official code's); stop at the first τ
    whose walk reaches the target; apply the lowest score found to `model`. Returns that score."""
    base = {n: p.detach().clone() for n, p in model.named_parameters() if n in all_steps[0]}
    found = []
    for q, steps in zip(quantiles, all_steps, strict=True):
        for sign in (-1.0, 1.0):
            lam, score = walk(model, base, steps, probe, grid, sign, keep_prob, patience)
            found.append((score, q, sign, lam, steps))
        if min(f[0] for f in found) <= 0.0:
            break
    score, q, sign, lam, steps = min(found, key=lambda f: f[0])  # the first of equals
    place(model, base, steps, sign * lam)
    if log:
        log({"stage": "mnemonic", "rule": "impressions", "quantile": q, "sign": sign, "lambda": lam,
             "score": score, "reached": score <= 0.0})
    return score
