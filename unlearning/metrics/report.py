"""`evaluate`: every metric that applies to one model, as a flat `dict[str, float]`, METHODS.md §9.

Keys (classification; accuracies are fractions in [0, 1]):
    forget/acc, retain/acc, test/acc (train forget / train retain / all test samples), plus
    forget_test/acc, retain_test/acc when the split has forget-test data (class, subclass requests);
    mia/entropy_lr (or mia/entropy_svc), mia/loss_cv, mia/entropy_cv, mia/threshold_acc,
    mia/threshold_auc, mia/threshold_tpr_at_1fpr, mia/efficacy; zrf;
    with an oracle: oracle/act_dist, oracle/js, oracle/js_textbook, oracle/kl, oracle/kl_test,
    oracle/weight_dist, oracle/avg_gap; with an oracle and the original (and `cfg.ain`): ain;
    with a band of retrains (`membership`): membership/shift, membership/tau (`membership.py`).
Regression: */mae instead of */acc; mia/regression_svc, mia/loss_cv, mia/threshold_* on L1 loss;
    oracle/w1, oracle/weight_dist; ain. No zrf (it is defined on class probabilities).
nan values: an MIA on a set too small to fit (fewer than 10 forget samples for the *_cv attacks) or a
    model whose outputs are not finite.

Cost (bench/bench_evaluate.py): each model's outputs are computed once per set (forget_test / retain_test
are rows of the test outputs); what depends only on the oracle (its outputs, its average-gap reference,
rt(oracle)) or on the architecture (ZRF's random teacher) is memoised by content (`cache`), so scoring
many models against one oracle pays for it once; the work runs on one CPU thread (`EVAL_CPU_THREADS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..config import EvaluateConfig
from ..data import Samples
from ..requests import Split
from ..training import model_device, predict
from ..utils import cpu_threads
from .accuracy import utility
from .ain import anamnesis_index
from .cache import ORACLE, TEACHER, digest
from .distances import (
    act_dist,
    js_divergence,
    js_textbook,
    kl_divergence,
    random_teacher,
    wasserstein,
    weight_distance,
)
from .membership import MembershipReference, log_odds, membership_shift
from .mia import efficacy, mia_metrics
from .outputs import eval_sets, forget_eval, model_outputs, outputs
from .signals import signals

GAP_KEYS = ("forget/acc", "retain/acc", "test/acc", "mia/efficacy")
# Evaluation is many small CPU ops (AIN's relearning steps on batches of <= 256, checks of a few hundred
# rows, 1-D attack fits), where more intra-op threads only add synchronisation. On the shared 2-core
# machine (load 4-5) the default 2 threads made an AIN step on digits 20x slower (83 ms vs 4 ms) and one
# on MNIST (cnn, width 16) 2.5x slower (0.7-0.9 s vs 0.3 s); see bench/bench_evaluate.py.
EVAL_CPU_THREADS = 1


def _teacher_outputs(model: nn.Module, samples: Samples, device: torch.device) -> Tensor:
    """ZRF's random teacher's outputs on `samples`: they depend on the architecture only, so memoised."""
    key = digest("zrf", getattr(model, "spec", None), model_device(model).type, samples, device.type)
    return TEACHER.get(key, lambda: predict(random_teacher(model), samples).to(device))


def _oracle_side(oracle: nn.Module, split: Split, sets: Mapping[str, Samples], seed: int, regression: bool,
                 device: torch.device) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The oracle's outputs and (classification) its average-gap reference, memoised per oracle and data."""
    names = ("forget",) if regression else ("forget", "retain", "test", forget_eval(sets))

    def compute() -> tuple[dict[str, Tensor], dict[str, float]]:
        o_outs = outputs(oracle, split, sets, names, device)
        return o_outs, ({} if regression else _gap_reference(o_outs, sets, seed))

    key = digest("oracle", oracle, model_device(oracle).type, device.type, seed, regression,
                 *(sets[k] for k in sorted(sets)))
    return ORACLE.get(key, compute)


def _oracle_metrics(model: nn.Module, oracle: nn.Module, sets: Mapping[str, Samples],
                    outs: Mapping[str, Tensor], o_outs: Mapping[str, Tensor], regression: bool) -> dict[str, float]:
    out = {"oracle/weight_dist": weight_distance(model, oracle)}
    if regression:
        out["oracle/w1"] = wasserstein(outs["forget"], o_outs["forget"])
        return out
    fe = forget_eval(sets)
    out.update({"oracle/act_dist": act_dist(outs[fe], o_outs[fe]), "oracle/js": js_divergence(outs[fe], o_outs[fe]),
                "oracle/js_textbook": js_textbook(outs[fe], o_outs[fe]),
                "oracle/kl": kl_divergence(outs[fe], o_outs[fe]),
                "oracle/kl_test": kl_divergence(outs["test"], o_outs["test"])})
    return out


def _gap_reference(o_outs: Mapping[str, Tensor], sets: Mapping[str, Samples], seed: int) -> dict[str, float]:
    """The oracle's own accuracies and MIA-efficacy: what `average_gap` compares against (one SVC fit)."""
    keys = ("forget", "retain", "test")
    ref = {f"{k}/acc": utility(o_outs[k], sets[k].y, False) for k in keys}
    conf = {k: signals(o_outs[k], sets[k].y, False)["confidence"] for k in keys}
    ref["mia/efficacy"] = efficacy(conf["retain"], conf["test"], conf["forget"], seed)
    return ref


def evaluate(model: nn.Module, split: Split, *, original: nn.Module | None = None,
             oracle: nn.Module | None = None, cfg: EvaluateConfig | None = None,
             seed: int = 0, membership: MembershipReference | None = None,
             band_member: int | None = None) -> dict[str, float]:
    """Score one model on a forget request: utility, MIAs, ZRF, distances to the oracle and AIN.

    Everything runs in eval mode under no_grad on the model's device (AIN relearns copies). See the module
    docstring for the keys; `oracle/*` needs `oracle`, `ain` needs `cfg.ain`, `original` and `oracle`.

    Args:
        model: the model to score (typically the unlearned one; the original and oracle can be scored too).
        split: the forget request's split.
        original: the model trained on all data (AIN's target).
        oracle: the model retrained on the retain set (the gold standard).
        cfg: the evaluate section (MIA classifier, AIN switch and cap); defaults when None.
        seed: seed of the MIA subsamples and of AIN's batch order.
        membership: the retrained models' per-sample log-odds (`membership.band_reference`), for the
            paired membership shift; `band_member` is the model's row there when it is one of them.

    Returns:
        Flat metric names mapped to plain floats.
    """
    cfg = cfg or EvaluateConfig()
    device = model_device(model)
    with cpu_threads(EVAL_CPU_THREADS, device):
        metrics = _scores(model, split, original, oracle, cfg, seed, device, membership, band_member)
    return {k: float(v) for k, v in metrics.items()}


def _scores(model: nn.Module, split: Split, original: nn.Module | None, oracle: nn.Module | None,
            cfg: EvaluateConfig, seed: int, device: torch.device, membership: MembershipReference | None,
            band_member: int | None) -> dict[str, float]:
    regression = split.dataset.task == "regression"
    unit = "mae" if regression else "acc"
    sets = eval_sets(split, device)
    with torch.no_grad():
        outs = model_outputs(model, split, sets, device)
        metrics: dict[str, float] = {f"{name}/{unit}": utility(outs[name], s.y, regression)
                                     for name, s in sets.items()}
        sig = {name: signals(outs[name], sets[name].y, regression) for name in ("forget", "retain", "test")}
        metrics.update(mia_metrics(sig, regression=regression, classifier=cfg.mia_classifier, seed=seed))
        if not regression:
            fe = forget_eval(sets)
            metrics["zrf"] = 1.0 - js_divergence(outs[fe], _teacher_outputs(model, sets[fe], device))
            if membership is not None:
                metrics.update(membership_shift(membership, log_odds(outs["forget"], sets["forget"].y),
                                                log_odds(outs["test"], sets["test"].y), leave_out=band_member))
        if oracle is not None:
            # The oracle's outputs and reference: once per oracle and split, shared by every model scored.
            o_outs, reference = _oracle_side(oracle, split, sets, seed, regression, device)
            metrics.update(_oracle_metrics(model, oracle, sets, outs, o_outs, regression))
            if not regression:
                metrics["oracle/avg_gap"] = average_gap(metrics, reference)
    if cfg.ain and original is not None and oracle is not None:
        metrics["ain"] = anamnesis_index(model, oracle, original, split, max_steps=cfg.ain_max_steps, seed=seed)
    return metrics


def average_gap(metrics: Mapping[str, float], oracle_metrics: Mapping[str, float]) -> float:
    """SalUn's average gap (§9.3d): mean |method − oracle| over forget/acc, retain/acc, test/acc, mia/efficacy.

    Using forget/acc in place of UA = 1 − forget/acc gives the same gap. Good: 0.

    Args:
        metrics: the method's `evaluate` output.
        oracle_metrics: the oracle's `evaluate` output.

    Returns:
        The mean gap in percentage points (the metrics are fractions); averaged over the keys that both
        dicts hold with finite values, nan when there are none.
    """
    gaps = [abs(metrics[k] - oracle_metrics[k]) * 100.0 for k in GAP_KEYS
            if k in metrics and k in oracle_metrics and math.isfinite(metrics[k]) and math.isfinite(oracle_metrics[k])]
    return sum(gaps) / len(gaps) if gaps else float("nan")
