"""The gate rule: pass within the retrain band (or the limit), fail beyond it across the interval,
inconclusive in between; oracle-free gates; the one-sample resolution; notes on limits finer than noise."""

from __future__ import annotations

import math

import pytest

from unlearning.config import Gates
from unlearning.verdicts import decide_gates, noise_notes, overall, score

GATES = Gates()
SIZES = {"forget/acc": 146, "retain/acc": 1291, "test/acc": 288, "mia/entropy_lr": 146}
BASE = [{"training_seed": 0, "forget/acc": 1.0, "retain/acc": 1.0, "test/acc": 0.97, "mia/entropy_lr": 0.85}]
ORACLES = [{"training_seed": s, "forget/acc": 0.0, "retain/acc": 1.0, "test/acc": 0.86, "mia/entropy_lr": m}
           for s, m in enumerate([0.12, 0.14, 0.10])]


def run(**metrics: float) -> list[dict]:
    return [{"training_seed": 0, "seed": 0, "forget/acc": 0.0, "retain/acc": 1.0, "test/acc": 0.86,
             "mia/entropy_lr": 0.12, **metrics}]


def decide(method: list[dict], oracle: list[dict] | None = ORACLES, scenario: str = "class", sizes=SIZES,
           gates: Gates = GATES) -> dict:
    return {g.name: g for g in decide_gates(method, BASE, oracle, gates, scenario=scenario, sizes=sizes)}


def test_a_retrain_like_model_passes_and_the_original_fails():
    ok = decide(run())
    assert set(ok) == {"forget_acc_vs_oracle", "mia_vs_oracle", "retain_acc_drop", "test_acc_drop"}
    assert all(g.verdict == "pass" for g in ok.values()) and overall(list(ok.values())) == "pass"
    bad = decide(BASE)
    assert bad["forget_acc_vs_oracle"].verdict == "fail" and math.isclose(bad["forget_acc_vs_oracle"].value, 100.0)
    assert bad["mia_vs_oracle"].verdict == "fail" and overall(list(bad.values())) == "fail"


def test_the_mia_gate_widens_to_the_retrains_spread_and_says_inconclusive_between():
    # 146 forget samples at a rate of 0.12: one model's rate has sd 2.7 points, so the 5-point limit is
    # finer than where retrains land (2.5 sigma, sigma = 2.7 * sqrt(1 + 1/3) = 3.1 points: about 7.8).
    near = decide(run(**{"mia/entropy_lr": 0.18}))["mia_vs_oracle"]
    assert near.verdict == "pass" and 7.0 < near.threshold < 8.5 and "limit 5 < retrain spread" in near.reason
    middle = decide(run(**{"mia/entropy_lr": 0.25}))["mia_vs_oracle"]
    assert middle.verdict == "inconclusive" and "more seeds" in middle.reason
    assert middle.ci[0] < middle.threshold < middle.ci[1]
    far = decide(run(**{"mia/entropy_lr": 0.32}))["mia_vs_oracle"]
    assert far.verdict == "fail" and far.ci[0] > far.threshold


def test_precise_data_is_held_to_the_limit():
    big = {k: 1_000_000 for k in SIZES}
    oracles = [{**o, "mia/entropy_lr": 0.12} for o in ORACLES]
    assert decide(run(**{"mia/entropy_lr": 0.16}), oracles, sizes=big)["mia_vs_oracle"].verdict == "pass"
    assert decide(run(**{"mia/entropy_lr": 0.18}), oracles, sizes=big)["mia_vs_oracle"].verdict == "fail"


def test_more_unlearning_seeds_cannot_remove_the_training_seed_floor():
    one = decide(run(**{"mia/entropy_lr": 0.2}))["mia_vs_oracle"]
    many = decide(run(**{"mia/entropy_lr": 0.2}) * 20)["mia_vs_oracle"]
    assert math.isclose(one.threshold, many.threshold)  # identical seeds: no unlearning spread to add
    bases = [{**run(**{"mia/entropy_lr": 0.2})[0], "training_seed": t} for t in range(3)]
    assert decide(bases)["mia_vs_oracle"].threshold < one.threshold  # three bases measure it


def test_drop_gates_allow_what_retraining_itself_loses_and_use_kept_classes():
    loses = decide(run(**{"test/acc": 0.86}))["test_acc_drop"]  # 11 points below the base, like the retrains
    assert loses.verdict == "pass" and loses.value == pytest.approx(11.0)
    oracles = [{**o, "retain_test/acc": 0.965} for o in ORACLES]
    sizes = {**SIZES, "retain_test/acc": 257}
    missing = decide(run(**{"retain_test/acc": 0.95}), oracles, sizes=sizes)["test_acc_drop"]
    assert missing.verdict == "inconclusive" and "missing" in missing.reason  # the base lacks retain_test/acc
    base = [{**BASE[0], "retain_test/acc": 0.97}]
    kept = {v.name: v for v in decide_gates(run(**{"retain_test/acc": 0.90}), base, oracles, GATES,
                                            scenario="class", sizes=sizes)}
    assert kept["test_acc_drop"].verdict == "fail" and kept["test_acc_drop"].value == pytest.approx(7.0)


def test_oracle_free_gates_replace_the_oracle_gates():
    names = set(decide(run(), oracle=None))
    assert names == {"forget_acc_max", "mia_max", "retain_acc_drop", "test_acc_drop"}
    ids = decide(run(**{"forget/acc": 0.99, "test/acc": 0.86}), oracle=None, scenario="ids")
    assert ids["forget_acc_vs_test"].verdict == "fail"  # forgotten samples still look seen


def test_missing_metric_is_inconclusive_and_unknown_gates_are_refused_at_load():
    only = Gates(forget_acc_vs_oracle=None, mia_vs_oracle=None, retain_acc_drop=None, membership_vs_oracle=None)
    g = decide_gates([{"retain/acc": 0.99}], BASE, ORACLES, only, scenario="ids", sizes=SIZES)
    assert len(g) == 1 and g[0].verdict == "inconclusive" and "missing" in g[0].reason
    with pytest.raises(ValueError, match="nope"):
        Gates(nope=1.0)


def test_forget_set_gates_are_not_finer_than_one_sample():
    sizes = {**SIZES, "forget/acc": 20, "mia/entropy_lr": 20}
    m = run(**{"forget/acc": 0.05})
    gate = decide(m, sizes=sizes, scenario="ids")["forget_acc_vs_oracle"]
    assert gate.threshold >= 5.0 and gate.verdict == "pass" and "one of 20" in gate.reason


def test_noise_notes_name_only_the_limits_finer_than_the_retrains():
    notes = noise_notes(BASE, ORACLES, GATES, scenario="class", sizes=SIZES)
    assert any(n.startswith("mia_vs_oracle: limit 5") for n in notes)
    assert not any(n.startswith("forget_acc_vs_oracle") for n in notes)  # retrains all score 0: precise
    assert noise_notes(BASE, ORACLES, Gates(mia_vs_oracle=50.0), scenario="class", sizes=SIZES) == [
        n for n in notes if not n.startswith("mia_vs_oracle")]
    assert noise_notes(BASE, [], GATES, scenario="class", sizes=SIZES) == []


def test_score_prefers_the_gap_to_the_oracle():
    verdicts = decide_gates(run(), BASE, ORACLES, GATES, scenario="class", sizes=SIZES)
    assert score({"oracle/avg_gap": 1.5}, verdicts) == 1.5
    assert 0 <= score({}, verdicts) < 1
    assert overall([]) == "inconclusive"


def test_a_method_much_noisier_than_retraining_is_inconclusive_even_near_the_retrains():
    # neggrad on three digits bases: MIA 0.45, 0.07, 0.00; its mean is 5 points from the retrains', but
    # one base says 33 points: the mean alone cannot pass it.
    runs = [{**run(**{"mia/entropy_lr": v})[0], "training_seed": t} for t, v in enumerate([0.45, 0.07, 0.0])]
    gate = decide(runs)["mia_vs_oracle"]
    assert gate.verdict == "inconclusive" and "as much as retraining" in gate.reason
    steady = [{**run(**{"mia/entropy_lr": v})[0], "training_seed": t} for t, v in enumerate([0.16, 0.17, 0.18])]
    assert decide(steady)["mia_vs_oracle"].verdict == "pass"
