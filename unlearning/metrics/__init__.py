"""Unlearning metrics, METHODS.md §9: utility, membership inference, distances to the oracle, ZRF, AIN.

`evaluate(model, split, original=..., oracle=...)` returns them all as one flat `dict[str, float]`.
Per-sample signals (`signals.py`) are kept apart from the attacks that consume them (`mia.py`).
"""

from .accuracy import accuracy, class_accuracies, confusion_matrix, mean_abs_error, per_class_accuracy
from .ain import anamnesis_index, relearn_steps
from .cache import clear_cache
from .distances import (
    ZRF_SEED,
    act_dist,
    js_divergence,
    js_textbook,
    kl_divergence,
    random_teacher,
    wasserstein,
    weight_distance,
    zrf,
)
from .mia import cv_attack, efficacy, entropy_attack, member_rate, regression_attack, threshold_attack
from .report import average_gap, evaluate
from .signals import mia_scores

__all__ = ["ZRF_SEED", "accuracy", "act_dist", "anamnesis_index", "average_gap", "class_accuracies", "clear_cache",
           "confusion_matrix", "cv_attack", "efficacy", "entropy_attack", "evaluate", "js_divergence", "js_textbook",
           "kl_divergence", "mean_abs_error", "member_rate", "mia_scores", "per_class_accuracy",
           "random_teacher", "regression_attack", "relearn_steps", "threshold_attack", "wasserstein",
           "weight_distance", "zrf"]
