"""The paired membership shift: its arithmetic on known arrays, its gate, and on real digits models that the
original (trained on the forget samples) is told apart from a retrain with a fresh seed on a random request."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from unlearning.config import Gates, RequestConfig, TrainConfig
from unlearning.metrics.membership import (
    MembershipReference,
    band_reference,
    log_odds,
    membership_reference,
    membership_shift,
)
from unlearning.models import create_model
from unlearning.requests import resolve
from unlearning.training import fit
from unlearning.verdicts import decide_gates

N_F, N_T, K = 150, 300, 3


def test_log_odds_is_the_log_odds_of_the_true_label():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-3.0, 5.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    p = torch.softmax(logits, 1)[torch.arange(3), y].double().numpy()
    assert np.allclose(log_odds(logits, y), np.log(p / (1 - p)), atol=1e-6)


def _synthetic(seed: int = 0):
    """Per-sample difficulty shared by every model, model-to-model noise per sample, two classes."""
    rng = np.random.default_rng(seed)
    level_f, level_t = rng.normal(3, 2, N_F), rng.normal(3, 2, N_T)
    y_f, y_t = rng.integers(0, 2, N_F), rng.integers(0, 2, N_T)

    def model(member_boost: float = 0.0, offset: float = 0.0):
        return (level_f + rng.normal(0, 1, N_F) + member_boost + offset, level_t + rng.normal(0, 1, N_T) + offset)

    band = [model() for _ in range(K)]
    ref = membership_reference([b[0] for b in band], [b[1] for b in band], torch.tensor(y_f), torch.tensor(y_t))
    return ref, model


def test_a_fresh_model_lands_near_zero_and_a_member_model_above():
    ref, model = _synthetic()
    assert ref is not None and ref.size == K and ref.tau > 0
    fresh = membership_shift(ref, *model())["membership/shift"]
    member = membership_shift(ref, *model(member_boost=1.0))["membership/shift"]
    assert abs(fresh) < 3 * ref.tau
    assert member > 4 * ref.tau  # less than the boost: the clip (30 % quantile of |log-odds|) cuts most of it


def test_a_model_that_is_more_confident_everywhere_has_no_shift():
    """The unseen test samples of the same class take out the model's overall confidence level."""
    ref, model = _synthetic(1)
    assert abs(membership_shift(ref, *model(offset=2.0))["membership/shift"]) < 3 * ref.tau


def test_tau_matches_the_spread_of_fresh_models():
    ref, model = _synthetic(2)
    shifts = [membership_shift(ref, *model())["membership/shift"] for _ in range(200)]
    # Each fresh model's shift varies around the band's own (fixed) error; tau describes a fresh model
    # against a fresh band, so it is at least the spread seen with the band held fixed.
    assert 0.5 * ref.tau < np.std(shifts) < 1.3 * ref.tau


def test_one_retrain_gives_no_reference_and_the_reference_round_trips():
    ref, _ = _synthetic(3)
    assert membership_reference([ref.forget[0]], [ref.test[0]], torch.tensor(ref.y_forget),
                                torch.tensor(ref.y_test)) is None
    buf = io.BytesIO()
    ref.save(buf)
    buf.seek(0)
    assert MembershipReference.load(buf) == ref
    assert membership_shift(ref, ref.forget[1], ref.test[1], leave_out=1)["membership/k"] == K - 1


def _runs(shift: float, tau: float = 0.04) -> list[dict]:
    return [{"training_seed": 0, "seed": 0, "forget/acc": 0.98, "retain/acc": 1.0, "test/acc": 0.97,
             "mia/entropy_lr": 0.85, "membership/shift": shift, "membership/tau": tau, "membership/k": 3.0}]


@pytest.mark.parametrize("shift, verdict", [(0.02, "pass"), (-0.09, "pass"), (0.15, "inconclusive"),
                                            (0.3, "fail"), (-0.3, "fail")])
def test_the_membership_gate_on_random_requests(shift, verdict):
    sizes = {"forget/acc": 144, "retain/acc": 1293, "test/acc": 288, "mia/entropy_lr": 144}
    oracle = [{**_runs(0.0)[0], "training_seed": s, "forget/acc": 0.98} for s in range(3)]
    gates = {g.name: g for g in decide_gates(_runs(shift), _runs(0.3), oracle, Gates(), scenario="random",
                                             sizes=sizes)}
    gate = gates["membership_vs_oracle"]
    # One model on one base: pass within max(limit 0.1, 2.5 tau), fail beyond it by 1.96 tau more.
    assert math.isclose(gate.threshold, 0.1) and gate.verdict == verdict


def test_the_membership_gate_is_inconclusive_without_a_band_and_absent_on_class_requests():
    sizes = {"forget/acc": 146, "retain/acc": 1291, "test/acc": 288, "mia/entropy_lr": 146}
    runs = [{k: v for k, v in _runs(0.0)[0].items() if not k.startswith("membership")}]
    oracle = [{**runs[0], "training_seed": 0}]
    gates = {g.name: g for g in decide_gates(runs, runs, oracle, Gates(), scenario="ids", sizes=sizes)}
    assert gates["membership_vs_oracle"].verdict == "inconclusive"
    assert "evaluate.training_seeds" in gates["membership_vs_oracle"].reason
    on_class = decide_gates(_runs(0.5), _runs(0.5), oracle, Gates(), scenario="class", sizes=sizes)
    assert "membership_vs_oracle" not in {g.name for g in on_class}


def _trained(split, seed: int, retain_only: bool):
    torch.manual_seed(seed)
    ds = split.dataset
    model = create_model("mlp", ds.num_classes, ds.in_shape)
    samples = split.retain() if retain_only else split.train()
    return fit(model, samples, TrainConfig(seed=seed))  # the default recipe (30 epochs), as params.yaml


@pytest.mark.behaviour
def test_on_digits_the_original_shows_membership_and_a_fresh_retrain_does_not(digits, check):
    """Random 10 %: the aggregate gates passed the original in 100 of 100 trials; this one must not."""
    split = resolve(RequestConfig(random=0.1), digits)
    ref = band_reference([_trained(split, s, True) for s in (101, 102, 103)], split)
    assert ref is not None

    def z(model) -> float:
        from unlearning.metrics import evaluate

        return evaluate(model, split, membership=ref)["membership/shift"] / ref.tau

    # Over 30 seeded trials (bench/gate_calibration.py): a fresh retrain's |z| at most 2.0, the original's
    # z at least 5.1; the gate passes within 2.5 and fails beyond 4.46.
    check("fresh retrain |shift| / tau", abs(z(_trained(split, 104, True))), "<", 2.5)
    check("original shift / tau", z(_trained(split, 0, False)), ">", 4.46)
