"""Membership-inference attacks on per-sample signals (see `signals.py` for the signals), METHODS.md §9.2-9.3.

Attacks take numpy arrays of one signal and never touch a model. Label convention everywhere: member = 1,
non-member = 0. Every attack returns nan rather than raising when a set is too small to fit it, or when
a signal is not finite (a diverged model), so a report always has the same keys.
"""

from __future__ import annotations

import threading

import numpy as np
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.svm import SVC
from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn itself

CLASSIFIERS = ("lr", "svc")
RETAIN_CAP = 5000  # the entropy attack's member set is subsampled to this for speed on big datasets
# The SVC attacks fit an RBF SVC, whose cost grows superlinearly: uncapped, MIA-efficacy on MNIST (8,000 per
# side) took tens of seconds per model. 2,000 per side is the DRU code's own cap for its SVC attack.
SVC_CAP = 2000
MIN_CV_PER_SIDE = 10  # StratifiedShuffleSplit(test_size=0.1) needs both labels in every fold
NAN = float("nan")


def _finite(*arrays: np.ndarray) -> bool:
    return all(len(a) > 0 and np.isfinite(a).all() for a in arrays)


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most `n` elements of `x`, drawn without replacement (all of `x`, in order, if it is short)."""
    return x if len(x) <= n else x[rng.choice(len(x), size=n, replace=False)]


def make_classifier(classifier: str) -> LogisticRegression | SVC:
    """The attack model: balanced logistic regression (paper, SSD) or SVC(C=3, rbf) (BadT / SalUn repos)."""
    if classifier == "lr":
        return LogisticRegression(class_weight="balanced")
    if classifier == "svc":
        return SVC(C=3, gamma="auto", kernel="rbf")
    raise ValueError(f"'classifier' must be one of {list(CLASSIFIERS)}; got {classifier!r}")


def member_rate(members: np.ndarray, nonmembers: np.ndarray, targets: np.ndarray,
                classifier: str = "lr") -> float:
    """Train an attack on members (1) vs non-members (0), then score targets.

    Args:
        members: signal of known members, [M].
        nonmembers: signal of known non-members, [K].
        targets: signal of the samples to judge, [T].
        classifier: "lr" or "svc" (see `make_classifier`).

    Returns:
        The fraction of targets predicted member.
    """
    clf = make_classifier(classifier)
    if not _finite(members, nonmembers, targets):
        return NAN
    x = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf.fit(x, y)
    return float(clf.predict(targets[:, None]).mean())


def entropy_attack(retain: np.ndarray, test: np.ndarray, forget: np.ndarray, classifier: str = "lr",
                   seed: int = 0) -> float:
    """MIA-BT (Bad Teaching / SSD, §9.2): entropy attack fit on retain (members) vs test, applied to forget.

    Good: close to the retrained oracle's value (the original is usually ≈ 1); never assume 0.

    Args:
        retain: entropy of retain-train samples (capped at `RETAIN_CAP`, seeded).
        test: entropy of test samples.
        forget: entropy of forget-train samples.
        classifier: "lr" (balanced, paper) or "svc" (BadT repo).
        seed: seed of the retain subsample.

    Returns:
        The fraction of forget samples predicted member.
    """
    rng = np.random.default_rng(seed)
    retain = subsample(retain, RETAIN_CAP if classifier == "lr" else SVC_CAP, rng)
    if classifier == "svc":
        test = subsample(test, SVC_CAP, rng)
    return member_rate(retain, test, forget, classifier)


def cv_attack(forget: np.ndarray, test: np.ndarray) -> float:
    """∇τ / NeurIPS-kit "simple_mia" (§9.3a): cross-validated LR accuracy of forget (1) vs test (0).

    The larger set is shuffled with `default_rng(1)` and truncated to the smaller one; 10 stratified
    shuffle splits (test_size 0.1, random_state 0). Good: 0.5 (indistinguishable); above leaks membership,
    well below leaks too (Streisand effect).

    Args:
        forget: a signal (loss or entropy) of forget-train samples.
        test: the same signal of test samples.

    Returns:
        Mean accuracy over the splits; nan with fewer than `MIN_CV_PER_SIDE` samples on a side.
    """
    n = min(len(forget), len(test))
    if n < MIN_CV_PER_SIDE or not _finite(forget, test):
        return NAN
    rng = np.random.default_rng(1)
    forget = rng.permutation(forget)[:n] if len(forget) > n else forget
    test = rng.permutation(test)[:n] if len(test) > n else test
    x = np.concatenate([test, forget])[:, None]
    y = np.concatenate([np.zeros(n), np.ones(n)])
    cv = StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)
    # What cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean() computes, fold by
    # fold in the same order, without its per-fold validation and dispatch (half of evaluate on digits).
    scores = [np.mean(LogisticRegression().fit(x[fit], y[fit]).predict(x[held]) == y[held])
              for fit, held in cv.split(x, y)]
    return float(np.mean(scores))


def threshold_attack(retain: np.ndarray, test: np.ndarray, forget: np.ndarray,
                     seed: int = 0) -> dict[str, float]:
    """Yeom-style loss threshold (§9.3b): member iff loss <= tau.

    tau maximises balanced accuracy on retain (members) vs test; it is then applied to forget (members)
    vs test, both subsampled (seeded) to the same size. The test set serves both steps: tau is a single
    scalar, so the reuse barely biases it. Good: ≈ 0.5 accuracy, ≈ 0.5 AUC, TPR@1%FPR ≈ 0.01.

    Args:
        retain: loss of retain-train samples (lower = member).
        test: loss of test samples.
        forget: loss of forget-train samples.
        seed: seed of the balancing subsample.

    Returns:
        `{"acc", "auc", "tpr_at_1fpr"}`: balanced accuracy of the calibrated rule, threshold-free AUC, and
        the best TPR at FPR <= 1 % on forget vs test; nan when a set has fewer than 2 samples.
    """
    if min(len(retain), len(test), len(forget)) < 2 or not _finite(retain, test, forget):
        return {"acc": NAN, "auc": NAN, "tpr_at_1fpr": NAN}
    # Scores are -loss so that higher = more member-like, as roc_curve expects.
    y_cal = np.concatenate([np.ones(len(retain)), np.zeros(len(test))])
    fpr, tpr, thr = roc_curve(y_cal, -np.concatenate([retain, test]))
    tau = -thr[np.argmax(tpr - fpr)]  # max of (tpr + 1 - fpr) / 2; thr[0] = +inf predicts nobody member
    rng = np.random.default_rng(seed)
    n = min(len(forget), len(test))
    f, t = subsample(forget, n, rng), subsample(test, n, rng)
    acc = 0.5 * ((f <= tau).mean() + (t > tau).mean())
    y = np.concatenate([np.ones(n), np.zeros(n)])
    scores = -np.concatenate([f, t])
    fpr, tpr, _ = roc_curve(y, scores)
    return {"acc": float(acc), "auc": float(roc_auc_score(y, scores)),
            "tpr_at_1fpr": float(tpr[fpr <= 0.01].max())}


def efficacy(retain: np.ndarray, test: np.ndarray, forget: np.ndarray, seed: int = 0) -> float:
    """MIA-efficacy (SalUn / l1-sparse, §9.3d): SVC on true-label confidence, retain vs test, balanced.

    Good: the retrained oracle's value (≈ 1 for class forgetting, ≈ 0.1-0.2 for random forgetting);
    higher is *not* simply better.

    Args:
        retain: confidence of retain-train samples (members; subsampled to the test size, seeded).
        test: confidence of test samples (non-members); both sides capped at `SVC_CAP`.
        forget: confidence of forget-train samples.
        seed: seed of the balancing subsample.

    Returns:
        The fraction of forget samples predicted NON-member.
    """
    rng = np.random.default_rng(seed)
    n = min(len(retain), len(test), SVC_CAP)
    rate = member_rate(subsample(retain, n, rng), subsample(test, n, rng), forget, "svc")
    return 1.0 - rate


def regression_attack(train: np.ndarray, test: np.ndarray, forget: np.ndarray, seed: int = 0,
                      n: int = 2000) -> float:
    """DRU regression MIA (§9.3c): SVC on L1 loss, train (1, forget included) vs test (0).

    Good: close to the retrained oracle's value (AgeDB: original 0.593, retrain 0.301).

    Args:
        train: L1 loss of training samples (forget and retain); up to `n` are drawn.
        test: L1 loss of test samples; up to `n` are drawn.
        forget: L1 loss of forget-train samples; up to `n` are drawn.
        seed: seed of the draws.
        n: the per-set cap (2000 in the DRU code).

    Returns:
        The fraction of forget samples predicted member.
    """
    rng = np.random.default_rng(seed)
    return member_rate(subsample(train, n, rng), subsample(test, n, rng), subsample(forget, n, rng), "svc")


def mia_metrics(sig: dict[str, dict[str, np.ndarray]], *, regression: bool, classifier: str = "lr",
                seed: int = 0) -> dict[str, float]:
    """Run every attack that applies, with flat `mia/*` names.

    Args:
        sig: `{"forget"|"retain"|"test": signals(...)}` for one model.
        regression: whether the task is regression (L1 signal; no entropy or confidence).
        classifier: "lr" or "svc" for the entropy attack (reported as `mia/entropy_<classifier>`).
        seed: seed of the subsamples.

    Returns:
        Classification: `mia/entropy_{lr|svc}`, `mia/loss_cv`, `mia/entropy_cv`, `mia/threshold_*`,
        `mia/efficacy`. Regression: `mia/regression_svc`, `mia/loss_cv`, `mia/threshold_*` (on L1 loss).
    """
    make_classifier(classifier)  # fail on a bad name before any fitting
    # The attack fits are 1-D and tiny: BLAS threads only add synchronisation, and on a busy CPU their
    # spin-waiting made evaluate ~10x slower (measured on digits). One thread for the whole report.
    # The inputs are checked finite above every fit, so scikit-learn's own checks are skipped.
    with _blas_controller().limit(limits=1, user_api="blas"), \
            config_context(assume_finite=True, skip_parameter_validation=True):
        return _run_attacks(sig, regression, classifier, seed)


_controller: ThreadpoolController | None = None
_controller_lock = threading.Lock()


def _blas_controller() -> ThreadpoolController:
    """One ThreadpoolController for the process: building one scans every loaded library (~10 ms)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


def _run_attacks(sig: dict[str, dict[str, np.ndarray]], regression: bool, classifier: str,
                 seed: int) -> dict[str, float]:
    f, r, t = sig["forget"], sig["retain"], sig["test"]
    loss = "l1" if regression else "loss"
    out = {"mia/loss_cv": cv_attack(f[loss], t[loss])}
    out.update({f"mia/threshold_{k}": v for k, v in threshold_attack(r[loss], t[loss], f[loss], seed).items()})
    if regression:
        train = np.concatenate([f["l1"], r["l1"]])
        out["mia/regression_svc"] = regression_attack(train, t["l1"], f["l1"], seed)
        return out
    out[f"mia/entropy_{classifier}"] = entropy_attack(r["entropy"], t["entropy"], f["entropy"], classifier, seed)
    out["mia/entropy_cv"] = cv_attack(f["entropy"], t["entropy"])
    out["mia/efficacy"] = efficacy(r["confidence"], t["confidence"], f["confidence"], seed)
    return out
