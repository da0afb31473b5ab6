"""Metrics with known answers: synthetic signals for the attacks, tiny digits / diabetes models for the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearning.config import EvaluateConfig, RequestConfig, TrainConfig
from unlearning.metrics import (
    act_dist,
    anamnesis_index,
    average_gap,
    confusion_matrix,
    cv_attack,
    efficacy,
    entropy_attack,
    evaluate,
    js_divergence,
    js_textbook,
    kl_divergence,
    member_rate,
    mia_scores,
    per_class_accuracy,
    random_teacher,
    regression_attack,
    relearn_steps,
    threshold_attack,
    wasserstein,
    weight_distance,
    zrf,
)
from unlearning.models import create_model, fresh_copy
from unlearning.requests import resolve
from unlearning.training import fit, predict

CLASS_KEYS = {"forget/acc", "retain/acc", "test/acc", "forget_test/acc", "retain_test/acc", "mia/entropy_lr",
              "mia/loss_cv", "mia/entropy_cv", "mia/threshold_acc", "mia/threshold_auc",
              "mia/threshold_tpr_at_1fpr", "mia/efficacy", "zrf", "oracle/act_dist", "oracle/js",
              "oracle/js_textbook", "oracle/kl", "oracle/kl_test", "oracle/weight_dist", "oracle/avg_gap", "ain"}


@pytest.fixture(scope="module")
def class_split(digits):
    return resolve(RequestConfig(classes=[3]), digits)


@pytest.fixture(scope="module")
def original(class_split):
    torch.manual_seed(0)
    return fit(create_model("mlp", 10, (1, 8, 8), width=64), class_split.train(), TrainConfig(epochs=5))


@pytest.fixture(scope="module")
def oracle(class_split):
    torch.manual_seed(1)
    return fit(create_model("mlp", 10, (1, 8, 8), width=64), class_split.retain(), TrainConfig(epochs=5, seed=1))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- attacks on synthetic signals

@pytest.mark.behaviour
def test_attacks_on_one_distribution_are_chance(check):
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=2000), rng.normal(size=2000), rng.normal(size=2000)
    check("cv_attack |acc - 0.5|", abs(cv_attack(a, b) - 0.5), "<=", 0.05)
    res = threshold_attack(a, b, c)
    check("threshold |auc - 0.5|", abs(res["auc"] - 0.5), "<=", 0.05)
    check("threshold |acc - 0.5|", abs(res["acc"] - 0.5), "<=", 0.05)
    check("threshold tpr@1%fpr", res["tpr_at_1fpr"], "<=", 0.05)


@pytest.mark.behaviour
def test_attacks_on_separated_distributions(check):
    rng = np.random.default_rng(0)
    low, high = rng.normal(0, 1, 500), rng.normal(6, 1, 500)  # members low loss, non-members high
    check("cv_attack 1 - acc", 1 - cv_attack(low, high), "<", 0.05)
    res = threshold_attack(low, high, rng.normal(0, 1, 300))
    check("threshold 1 - auc", 1 - res["auc"], "<", 0.01)
    check("threshold 1 - acc", 1 - res["acc"], "<", 0.05)
    check("threshold 1 - tpr@1%fpr", 1 - res["tpr_at_1fpr"], "<", 0.1)
    for clf in ("lr", "svc"):
        check(f"member_rate {clf}: 1 - rate on members", 1 - member_rate(low, high, rng.normal(0, 1, 300), clf),
              "<", 0.05)
        check(f"member_rate {clf}: rate on non-members", member_rate(low, high, rng.normal(6, 1, 300), clf),
              "<", 0.05)
    # Entropy: members low. Efficacy: confidence, members high; score is the NON-member rate.
    check("entropy_attack on non-members", entropy_attack(low, high, rng.normal(6, 1, 300)), "<", 0.05)
    conf_in, conf_out = rng.uniform(0.9, 1.0, 400), rng.uniform(0.0, 0.3, 400)
    check("efficacy: 1 - rate on non-members", 1 - efficacy(conf_in, conf_out, rng.uniform(0.0, 0.3, 200)),
          "<", 0.05)
    check("efficacy on members", efficacy(conf_in, conf_out, rng.uniform(0.9, 1.0, 200)), "<", 0.05)
    check("regression_attack: 1 - rate on members", 1 - regression_attack(low, high, rng.normal(0, 1, 300)),
          "<", 0.05)


def test_attacks_degrade_to_nan():
    rng = np.random.default_rng(0)
    assert math.isnan(cv_attack(rng.normal(size=5), rng.normal(size=100)))
    assert math.isnan(cv_attack(np.array([np.nan] * 50), rng.normal(size=50)))
    assert all(math.isnan(v) for v in threshold_attack(np.ones(1), np.ones(5), np.ones(5)).values())
    assert math.isnan(member_rate(np.array([]), rng.normal(size=5), rng.normal(size=5)))
    with pytest.raises(ValueError, match="'classifier'"):
        member_rate(rng.normal(size=5), rng.normal(size=5), rng.normal(size=5), "knn")


# --------------------------------------------------------------------------- distances, ZRF

def test_distances_to_self_are_zero_and_known_values():
    logits = torch.randn(64, 10)
    for fn in (act_dist, js_divergence, js_textbook, kl_divergence):
        assert fn(logits, logits) == pytest.approx(0.0, abs=1e-6)
    # Two one-hot-ish distributions on disjoint classes: textbook JS -> ln 2, act_dist -> sqrt(2).
    p, q = torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])
    assert js_textbook(p, q) == pytest.approx(math.log(2), abs=1e-4)
    assert act_dist(p, q) == pytest.approx(math.sqrt(2), abs=1e-4)
    # Code-JS: KL(m||p) terms averaged over N x C = 2 elements each.
    pp, qq = torch.softmax(p, 1), torch.softmax(q, 1)
    m = (pp + qq) / 2
    manual = 0.5 * (m * (m.log() - pp.log())).mean() + 0.5 * (m * (m.log() - qq.log())).mean()
    assert js_divergence(p, q) == pytest.approx(float(manual), rel=1e-4)
    assert wasserstein(torch.arange(5.0), torch.arange(5.0) + 2.0) == pytest.approx(2.0)


def test_weight_distance():
    model = create_model("mlp", 10, (1, 8, 8), width=16)
    assert weight_distance(model, model) == 0.0
    doubled = fresh_copy(model)
    doubled.load_state_dict({k: 2 * v for k, v in model.state_dict().items()})
    assert weight_distance(doubled, model) == pytest.approx(1.0, rel=1e-5)  # ‖2θ - θ‖ / ‖θ‖
    with pytest.raises(ValueError, match="'reference'"):
        weight_distance(model, create_model("mlp", 10, (1, 8, 8), width=8))


@pytest.mark.behaviour
def test_zrf(class_split, original, check):
    forget = class_split.forget_test()
    teacher = random_teacher(original)
    assert zrf(teacher, forget) == pytest.approx(1.0, abs=1e-6)
    random_net = fresh_copy(original, seed=123)
    # zrf(original) < zrf(random_net), as a ratio of their code-JS distances to the random teacher.
    check("JS to T_d, random net / original", (1 - zrf(random_net, forget)) / (1 - zrf(original, forget)),
          "<", 1.0)
    # The teacher is seeded without shifting the caller's random stream.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    random_teacher(original)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- AIN, average gap

def test_ain_of_oracle_against_itself_is_one(class_split, original, oracle):
    before = _state(oracle), _state(original)
    assert anamnesis_index(oracle, oracle, original, class_split, max_steps=50) == pytest.approx(1.0)
    assert _same_state(oracle, before[0]) and _same_state(original, before[1])


@pytest.mark.behaviour
def test_ain_of_original_is_below_one_and_the_cap_holds(class_split, original, oracle, check):
    # The original never forgot: it meets its own target after the first step, the oracle needs more.
    check("AIN of the original", anamnesis_index(original, oracle, original, class_split, max_steps=50), "<", 1.0)
    forget = class_split.forget()
    assert relearn_steps(oracle, forget, forget, 1.5, regression=False, max_steps=3) == 3  # unreachable


def test_average_gap():
    m = {"forget/acc": 0.1, "retain/acc": 0.9, "test/acc": 0.8, "mia/efficacy": 0.7, "zrf": 0.3}
    assert average_gap(m, dict(m)) == 0.0
    assert average_gap({**m, "forget/acc": 0.2}, m) == pytest.approx(10.0 / 4)  # 10 points on one of 4 keys


# --------------------------------------------------------------------------- accuracy helpers, evaluate

def test_accuracy_helpers_match_manual(class_split, original):
    test = class_split.test()
    pred = predict(original, test).argmax(1)
    cm = confusion_matrix(original, test, 10)
    assert cm.sum() == len(test) and cm.trace() == int((pred == test.y).sum())
    per_class = per_class_accuracy(original, test, 10)
    for c in range(10):
        mask = test.y == c
        assert per_class[c] == pytest.approx(float((pred[mask] == c).float().mean()))


def test_evaluate_class_forgetting(class_split, original, oracle):
    before = _state(original)
    out = evaluate(original, class_split, original=original, oracle=oracle,
                   cfg=EvaluateConfig(ain_max_steps=30))
    assert set(out) == CLASS_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert _same_state(original, before)
    for name in ("forget", "retain", "test"):
        samples = getattr(class_split, name)()
        manual = float((predict(original, samples).argmax(1) == samples.y).float().mean())
        assert out[f"{name}/acc"] == pytest.approx(manual)
    # The oracle never saw class 3: every distance from itself is 0 and its forget accuracy is 0.
    ref = evaluate(oracle, class_split, oracle=oracle, cfg=EvaluateConfig(ain=False))
    assert ref["forget/acc"] == 0.0 and ref["oracle/avg_gap"] == 0.0
    assert ref["oracle/js"] == pytest.approx(0.0, abs=1e-6) and ref["oracle/weight_dist"] == 0.0
    assert "ain" not in ref


def test_evaluate_options(class_split, original):
    out = evaluate(original, class_split, cfg=EvaluateConfig(mia_classifier="svc"))
    assert "mia/entropy_svc" in out and "mia/entropy_lr" not in out
    assert not any(k.startswith("oracle/") for k in out) and "ain" not in out
    scores = mia_scores(original, class_split)
    assert len(scores["forget/loss"]) == len(class_split.forget_idx)
    assert {k.split("/")[1] for k in scores} == {"entropy", "loss", "confidence"}


def test_evaluate_regression(diabetes):
    ds = diabetes
    split = resolve(RequestConfig(target_range=(25.0, 90.0)), ds)
    kw = {"y_mean": float(ds.y_train.mean()), "y_std": float(ds.y_train.std())}
    torch.manual_seed(0)
    orig = fit(create_model("regressor", 1, (10,), width=32, **kw), split.train(), TrainConfig(epochs=5))
    torch.manual_seed(1)
    orc = fit(create_model("regressor", 1, (10,), width=32, **kw), split.retain(), TrainConfig(epochs=5))
    out = evaluate(orig, split, original=orig, oracle=orc, cfg=EvaluateConfig(ain_max_steps=20))
    assert {"forget/mae", "retain/mae", "test/mae", "forget_test/mae", "retain_test/mae", "mia/regression_svc",
            "mia/loss_cv", "oracle/w1", "oracle/weight_dist", "ain"} <= set(out)
    assert not any(k.endswith("/acc") for k in out) and "zrf" not in out
    assert all(math.isfinite(v) for v in out.values())
    assert evaluate(orc, split, oracle=orc, cfg=EvaluateConfig(ain=False))["oracle/w1"] == 0.0


# --------------------------------------------------------------------------- what makes evaluate cheap

def test_cv_attack_is_cross_val_score():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    rng = np.random.default_rng(3)
    forget, test = rng.normal(0.3, 1.0, 150), rng.normal(0.0, 1.0, 400)
    n = 150
    x = np.concatenate([np.random.default_rng(1).permutation(test)[:n], forget])[:, None]
    y = np.concatenate([np.zeros(n), np.ones(n)])
    cv = StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)
    assert cv_attack(forget, test) == float(cross_val_score(LogisticRegression(), x, y, cv=cv).mean())


def test_relearn_check_decides_as_accuracy_does():
    # The early-stopping check must say exactly `accuracy(outputs, y) >= target`, at every boundary.
    from unlearning.data import Samples
    from unlearning.metrics.accuracy import accuracy
    from unlearning.metrics.ain import _Check

    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 100, 1500):
        logits = torch.randn(n, 5, generator=gen)
        y = torch.randint(0, 5, (n,), generator=gen)
        val = Samples(logits, y, torch.arange(n))
        acc = accuracy(logits, y)
        targets = [0.0, -1.0, 1.0, 1.5, acc, math.nextafter(acc, 2.0), math.nextafter(acc, -1.0)]
        targets += [c / n for c in range(0, n + 1, max(1, n // 13))] + [0.95 * acc]
        for target in targets:
            assert _Check(val, target)(torch.nn.Identity()) == (acc >= target), (n, target)


def test_ain_memo_hits_on_the_same_content_and_misses_otherwise(class_split, original, oracle, monkeypatch):
    import copy

    import unlearning.metrics.ain as ain_module
    from unlearning.metrics import clear_cache

    calls = []
    real = ain_module.relearn_steps
    monkeypatch.setattr(ain_module, "relearn_steps", lambda model, *a, **kw: calls.append(1) or real(model, *a, **kw))
    clear_cache()
    first = anamnesis_index(original, oracle, original, class_split, max_steps=30)
    assert len(calls) == 2
    # The same oracle loaded again (another object, same weights): rt of both models is reused.
    assert anamnesis_index(copy.deepcopy(original), copy.deepcopy(oracle), original, class_split,
                           max_steps=30) == first
    assert len(calls) == 2
    # Other weights, another seed or another cap: computed again.
    other = copy.deepcopy(oracle)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    anamnesis_index(original, other, original, class_split, max_steps=30)
    assert len(calls) == 3
    anamnesis_index(original, oracle, original, class_split, max_steps=30, seed=1)
    assert len(calls) == 5
    anamnesis_index(original, oracle, original, class_split, max_steps=31)
    assert len(calls) == 7
    # A hit gives exactly what a cold computation gives.
    clear_cache()
    assert anamnesis_index(original, oracle, original, class_split, max_steps=30) == first


def test_evaluate_memo_gives_identical_values_and_misses_on_another_oracle_or_seed(class_split, original, oracle):
    import copy

    from unlearning.metrics import clear_cache
    from unlearning.metrics.cache import ORACLE, OUTPUTS, RELEARN, TEACHER
    from unlearning.metrics.signals import signals

    cfg = EvaluateConfig(ain_max_steps=20)
    clear_cache()
    cold = evaluate(original, class_split, original=original, oracle=oracle, cfg=cfg)
    sizes = len(ORACLE), len(RELEARN), len(TEACHER)
    assert sizes == (1, 2, 1) and len(OUTPUTS) == 1
    # The plots' signals reuse the outputs `evaluate` computed, and equal a direct computation.
    scores = mia_scores(original, class_split)
    assert len(OUTPUTS) == 1
    forget = class_split.forget()
    for key, values in signals(predict(original, forget), forget.y, False).items():
        assert np.array_equal(scores[f"forget/{key}"], values)
    warm = evaluate(original, class_split, original=original, oracle=copy.deepcopy(oracle), cfg=cfg)
    assert warm == cold and (len(ORACLE), len(RELEARN), len(TEACHER)) == sizes
    other = copy.deepcopy(oracle)
    with torch.no_grad():
        next(other.parameters()).mul_(1.5)
    moved = evaluate(original, class_split, original=original, oracle=other, cfg=cfg)
    assert len(ORACLE) == 2 and moved["oracle/weight_dist"] != cold["oracle/weight_dist"]
    assert moved["oracle/kl_test"] != cold["oracle/kl_test"]
    evaluate(original, class_split, original=original, oracle=oracle, cfg=cfg, seed=1)
    assert len(ORACLE) == 3
    clear_cache()
    assert (len(ORACLE), len(RELEARN), len(TEACHER)) == (0, 0, 0)
    assert evaluate(original, class_split, original=original, oracle=oracle, cfg=cfg) == cold


def test_memo_computes_once_for_concurrent_callers():
    import threading
    import time

    from unlearning.metrics.cache import Memo

    memo, calls = Memo(2), []

    def compute():
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("k", compute))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1, 1, 1, 1] and calls == [1]
    memo.get("a", lambda: 2)
    memo.get("b", lambda: 3)  # size 2: "k" is the least recently used and goes
    assert memo.get("k", compute) == 2 and len(calls) == 2


def test_cpu_threads_caps_and_restores():
    from unlearning.utils import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads(1, "cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads(None, "cpu"), cpu_threads(1, "cuda"), cpu_threads(4, "cpu"):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
