"""Output and weight distances to a reference model, and ZRF, METHODS.md §9.4-9.5.

Output distances take logits (or regression predictions) of two models on the same samples. Lower is
better for every distance to the retrained oracle; 0 means identical to the oracle.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch import Tensor, nn

from ..data import Samples
from ..models import SEEDED_INIT_LOCK, Net, fresh_copy
from ..training import predict

# Fixed seed of ZRF's incompetent teacher T_d: every evaluation of one architecture compares against the
# same random network. Chosen away from small training seeds so T_d is not some model's own initialisation.
ZRF_SEED = 9_999


def act_dist(logits_u: Tensor, logits_rt: Tensor) -> float:
    """BadT `actv_dist`: mean over samples of the L2 norm of the softmax difference ([N, C] each)."""
    p, q = F.softmax(logits_u.float(), 1), F.softmax(logits_rt.float(), 1)
    return float((p - q).norm(dim=1).mean())


def js_divergence(logits_p: Tensor, logits_q: Tensor) -> float:
    """JS divergence as in the BadT code: ½KL(m‖p) + ½KL(m‖q), m = (p+q)/2, mean over N x C elements.

    Uses `F.kl_div(log p, m)` with the default 'mean' reduction, as the published ZRF/JS numbers do
    (METHODS.md §9.4 [QUIRK]); not the textbook JS (see `js_textbook`).
    """
    logp, logq = F.log_softmax(logits_p.float(), 1), F.log_softmax(logits_q.float(), 1)
    m = 0.5 * (logp.exp() + logq.exp())  # [N, C]
    # Written out rather than F.kl_div(..., 'mean'), which warns that its meaning will change.
    kl_mp = (torch.xlogy(m, m) - m * logp).mean()
    kl_mq = (torch.xlogy(m, m) - m * logq).mean()
    return max(0.0, float(0.5 * kl_mp + 0.5 * kl_mq))  # clamp float round-off below 0


def js_textbook(logits_p: Tensor, logits_q: Tensor) -> float:
    """Textbook JS divergence: ½KL(p‖m) + ½KL(q‖m), summed over classes, mean over samples (nats)."""
    logp, logq = F.log_softmax(logits_p.float(), 1), F.log_softmax(logits_q.float(), 1)
    logm = torch.logaddexp(logp, logq) - np.log(2.0)  # log((p + q) / 2), stable where p or q underflows
    kl_pm = F.kl_div(logm, logp, reduction="batchmean", log_target=True)
    kl_qm = F.kl_div(logm, logq, reduction="batchmean", log_target=True)
    return max(0.0, float(0.5 * kl_pm + 0.5 * kl_qm))


def kl_divergence(logits_u: Tensor, logits_rt: Tensor) -> float:
    """KL(p_rt ‖ p_u) summed over classes, mean over samples (`reduction='batchmean'`)."""
    logu, logrt = F.log_softmax(logits_u.float(), 1), F.log_softmax(logits_rt.float(), 1)
    return max(0.0, float(F.kl_div(logu, logrt, reduction="batchmean", log_target=True)))


def weight_distance(model: nn.Module, reference: nn.Module) -> float:
    """‖θ_u − θ_rt‖₂ / ‖θ_rt‖₂ over all parameters (buffers excluded), as in UNSIR/FMU `distance()`.

    Args:
        model: the unlearned model.
        reference: the retrained oracle (same architecture).

    Returns:
        The relative L2 distance; 0 when the weights are identical.
    """
    params_u, params_rt = list(model.parameters()), list(reference.parameters())
    if [p.shape for p in params_u] != [p.shape for p in params_rt]:
        raise ValueError("'reference' must have the same architecture as 'model'; parameter shapes differ")
    diff = sum(float((a.detach().float() - b.detach().float().to(a.device)).pow(2).sum())
               for a, b in zip(params_u, params_rt, strict=True))
    norm = sum(float(b.detach().float().pow(2).sum()) for b in params_rt)
    return (diff / norm) ** 0.5 if norm > 0 else float("nan")


def wasserstein(preds_u: Tensor, preds_rt: Tensor) -> float:
    """Wasserstein-1 between two regression prediction vectors (DRU, §9.4); lower is better."""
    return float(wasserstein_distance(preds_u.detach().cpu().double().flatten().numpy(),
                                      preds_rt.detach().cpu().double().flatten().numpy()))


def random_teacher(model: Net) -> Net:
    """ZRF's incompetent teacher T_d: `model`'s architecture initialised with `ZRF_SEED`, in eval mode.

    The global torch RNG is restored afterwards, so evaluating never shifts a caller's random stream.
    """
    # fresh_copy calls torch.manual_seed, which seeds CUDA too: fork every initialised device's RNG.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with SEEDED_INIT_LOCK, torch.random.fork_rng(devices=devices):  # fork and restore as one step
        teacher = fresh_copy(model, seed=ZRF_SEED)
    return teacher.eval()


@torch.no_grad()
def zrf(model: Net, samples: Samples) -> float:
    """Zero Retrain Forgetting (BadT, §9.5): 1 − code-JS(model, T_d) on `samples`.

    At most 1; 1 means the model behaves like a random network on the samples. Good: close to the
    retrained oracle's ZRF (near 1 for class forgetting, not necessarily 1 for random forgetting).
    It is not bounded below: the code's JS uses KL(m‖p), which grows without limit where a model puts
    near-zero probability on a class the teacher does not (a collapsed NegGrad+ model on digits
    scored −0.26). Values below 0 mean "far more confident than a random network", i.e. damage.

    Args:
        model: a classifier with a registry spec (so `fresh_copy` can rebuild it).
        samples: forget samples (`evaluate` passes forget-test data when the split has it).

    Returns:
        The ZRF score.
    """
    return 1.0 - js_divergence(predict(model, samples), predict(random_teacher(model), samples))
