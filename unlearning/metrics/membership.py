"""Paired membership shift: does a model treat the forget samples like unseen samples, as retraining does?

On a random request the aggregate attacks cannot tell the original model from a retrained one: on digits,
random 10 % (144 forget samples), the original's entropy-MIA member rate sits 4.4 points above the
retrains' mean while one model's rate varies by +/-8.9 points, so in 100 of 100 trials the original
passed the gates. The difference is per sample: the original is more confident on exactly the samples it
was trained on. So compare each forget sample with itself under the retrained models (LiRA's idea, on
the band of retrains the gates already have), and remove the model's overall confidence level with the
unseen test samples of the same class:

    phi(x)    = log-odds of the true label, log p_y - log(1 - p_y), clipped to [-c, c]
    delta(x)  = phi_model(x) - mean over the K retrains of phi_retrain(x)
    shift     = sum over classes k of w_k (mean of delta on forget samples of k
                                           - mean of delta on test samples of k),   w_k = forget share of k

A retrained model has shift ~ 0 (forget and test samples are both unseen to it and to the band); a model
that still holds the forget set has shift > 0; one that pushed the forget set below unseen samples (a
"Streisand" effect) has shift < 0. `tau` is the shift's noise for a model that behaves like a fresh
retrain, from the band alone: each retrain scored against the others (leave one out), its per-sample
standard error rescaled from K-1 to K reference models.

Why the clip: measured on digits MLP, random 10 %, 25 trials (three retrains per band), the unclipped
log-odds separated the original from a fresh retrain by 4.8 of the retrains' standard deviations;
clipped at the 30 % quantile of the band's |phi| on the test set (c ~ 7), by 6.2. Highly confident
samples carry little membership signal but much model-to-model noise. The quantile was chosen on those
25 trials and validated on fresh seeds (bench/gate_calibration.py; README).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CLIP_QUANTILE = 0.3  # of the band's |log-odds| on the test set: the clip c


def log_odds(logits: Tensor, targets: Tensor) -> np.ndarray:
    """log p_y - log(1 - p_y) per sample, computed stably from the logits ([N, C], [N] -> [N])."""
    z = logits.detach().float().cpu()
    y = targets.detach().cpu().long()[:, None]
    other = z.scatter(1, y, float("-inf"))
    return (z.gather(1, y)[:, 0] - torch.logsumexp(other, 1)).double().numpy()


@dataclass(frozen=True)
class MembershipReference:
    """The retrained models' per-sample log-odds on the forget and test sets (one row per retrain)."""

    forget: np.ndarray  # [K, n_forget], unclipped
    test: np.ndarray  # [K, n_test], unclipped
    y_forget: np.ndarray
    y_test: np.ndarray
    clip: float
    tau: float  # standard deviation of `shift` for a model that behaves like a fresh retrain

    @property
    def size(self) -> int:
        return int(self.forget.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MembershipReference):
            return NotImplemented
        arrays = ("forget", "test", "y_forget", "y_test")
        return (all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
                and (self.clip, self.tau) == (other.clip, other.tau))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def save(self, path: object) -> None:
        np.savez(path, forget=self.forget, test=self.test, y_forget=self.y_forget, y_test=self.y_test,
                 clip=self.clip, tau=self.tau)

    @classmethod
    def load(cls, path: object) -> MembershipReference:
        with np.load(path) as f:
            return cls(f["forget"], f["test"], f["y_forget"], f["y_test"], float(f["clip"]), float(f["tau"]))


def _paired(forget: np.ndarray, test: np.ndarray, ref_forget: np.ndarray, ref_test: np.ndarray,
            y_forget: np.ndarray, y_test: np.ndarray, clip: float) -> tuple[float, float]:
    """(shift, its per-sample standard error) of one model's log-odds against reference rows."""
    d_f = np.clip(forget, -clip, clip) - np.clip(ref_forget, -clip, clip).mean(0)
    d_t = np.clip(test, -clip, clip) - np.clip(ref_test, -clip, clip).mean(0)
    shift, var, weight = 0.0, 0.0, 0
    for k in np.unique(y_forget):
        f, t = d_f[y_forget == k], d_t[y_test == k]
        if len(f) < 2 or len(t) < 2:
            continue  # a class without unseen test samples cannot be compared
        shift += len(f) * (f.mean() - t.mean())
        var += len(f) ** 2 * (f.var(ddof=1) / len(f) + t.var(ddof=1) / len(t))
        weight += len(f)
    if weight == 0:
        return math.nan, math.nan
    return shift / weight, math.sqrt(var) / weight


def membership_reference(forget: Sequence[np.ndarray], test: Sequence[np.ndarray], y_forget: Tensor,
                         y_test: Tensor) -> MembershipReference | None:
    """The reference of K >= 2 retrained models from their log-odds; None with fewer (no spread to measure)."""
    if len(forget) < 2:
        return None
    f, t = np.stack(forget), np.stack(test)
    yf, yt = y_forget.cpu().numpy(), y_test.cpu().numpy()
    clip = float(np.quantile(np.abs(t), CLIP_QUANTILE))
    k = len(forget)
    # Leave one out: each retrain against the other K-1; a fresh model is compared with all K, so its
    # per-sample variance is s^2 (1 + 1/K) where the left-out one's is s^2 (1 + 1/(K-1)).
    ses = [_paired(f[j], t[j], np.delete(f, j, 0), np.delete(t, j, 0), yf, yt, clip)[1] for j in range(k)]
    tau = math.sqrt(float(np.mean(np.square(ses))) * (1 + 1 / k) / (1 + 1 / (k - 1)))
    return MembershipReference(f, t, yf, yt, clip, tau)


def membership_shift(reference: MembershipReference, forget: np.ndarray, test: np.ndarray,
                     leave_out: int | None = None) -> dict[str, float]:
    """`membership/shift` of one model's log-odds, with `membership/tau` (the band's noise on it) and
    `membership/k` (the retrains it was compared with).

    `leave_out` scores one of the reference's own retrains against the others.
    """
    rf, rt = reference.forget, reference.test
    if leave_out is not None:
        rf, rt = np.delete(rf, leave_out, 0), np.delete(rt, leave_out, 0)
    shift, _ = _paired(forget, test, rf, rt, reference.y_forget, reference.y_test, reference.clip)
    return {"membership/shift": float(shift), "membership/tau": reference.tau,
            "membership/k": float(len(rf))}


def band_reference(models: Sequence[torch.nn.Module], split: object) -> MembershipReference | None:
    """The reference of the retrained models `models` on `split`'s forget and test sets (None for fewer
    than two, or for regression: log-odds need class labels)."""
    from ..training import model_device
    from .outputs import eval_sets, model_outputs

    if len(models) < 2 or split.dataset.task == "regression":  # type: ignore[attr-defined]
        return None
    device = model_device(models[0])
    sets = eval_sets(split, device)  # type: ignore[arg-type]
    forget, test = [], []
    for model in models:  # the outputs `evaluate` needs too (memoised): one pass per model
        outs = model_outputs(model, split, sets, device)  # type: ignore[arg-type]
        forget.append(log_odds(outs["forget"], sets["forget"].y))
        test.append(log_odds(outs["test"], sets["test"].y))
    return membership_reference(forget, test, sets["forget"].y, sets["test"].y)
