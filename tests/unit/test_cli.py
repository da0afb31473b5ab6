"""`python -m unlearning`: runs on tiny budgets, prints the table, writes the JSON, rejects bad params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearning.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.epochs=4", "--set", "unlearn.methods=[finetune,neggrad]",
        "--set", "unlearn.finetune={epochs: 1}", "--set", "evaluate.ain_max_steps=20", "--set", "evaluate.training_seeds=[0]", "--quiet"]


@pytest.mark.behaviour
def test_runs_and_writes_json(tmp_path, capsys, check) -> None:
    out, report = tmp_path / "results.json", tmp_path / "report.html"
    seeds = ["--set", "evaluate.training_seeds=[0,1]"]
    assert main(["--params", str(ROOT / "params.yaml"), *TINY, *seeds, "--out", str(out), "--report", str(report)]) == 0
    table = capsys.readouterr().out
    for row in ("original", "oracle (retrain)", "finetune", "neggrad", "gates (points)", "verdict"):
        assert row in table
    assert " ± " in table
    assert f"report written to {report}" in table and 'class="pareto"' in report.read_text()
    assert set(json.loads(out.read_text())["details"]) == {"original", "oracle", "finetune", "neggrad"}
    results = json.loads(out.read_text())
    assert set(results) >= {"request", "original", "oracle", "methods", "gates", "verdicts"}
    assert results["complete"] is True and results["seeds"] == {"training": [0, 1], "unlearning": [0]}
    for entry in (results["original"], results["oracle"], results["methods"]["finetune"]):
        assert entry["n_seeds"] == 2 and len(entry["runs"]) == 2 and entry["eval/s"] > 0
        low, high = entry["ci"]["test/acc"]
        assert low <= entry["test/acc"] <= high
    for name in ("finetune", "neggrad"):
        assert results["verdicts"][name] in ("pass", "fail", "inconclusive")
        assert {g["name"] for g in results["gates"][name]} == {"forget_acc_vs_oracle", "mia_vs_oracle",
                                                               "retain_acc_drop", "test_acc_drop"}
    assert results["verdicts"]["finetune"] == "fail"  # it never touches class 3: forget acc stays ~1
    assert results["request"]["forget_classes"] == [3]
    check("oracle forget acc (a retrained model never saw class 3)", results["oracle"]["forget/acc"], "<=", 0.05)
    for name in ("finetune", "neggrad"):
        m = results["methods"][name]
        assert m["time/s"] > 0 and m["speedup"] > 0
        assert 0 <= m["forget/acc"] <= 1 and "mia/entropy_lr" in m
    assert results["methods"]["neggrad"]["data"] == ["forget"]
    assert results["methods"]["finetune"]["data"] == ["retain"]


def test_a_method_that_does_not_fit_the_request_is_skipped_with_its_reason(tmp_path, capsys) -> None:
    """UNSIR needs class labels: in a random-subset run it is skipped, and the methods after it still run."""
    out = tmp_path / "results.json"
    args = [*TINY, "--set", "request.random=0.1", "--set", "unlearn.methods=[unsir,neggrad]", "--out", str(out)]
    assert main(["--params", str(ROOT / "params.yaml"), *args]) == 0
    assert "unsir: skipped, method 'unsir' does not support 'random' requests" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["complete"] and results["methods"]["unsir"] == {
        "skipped": "method 'unsir' does not support 'random' requests; it supports ['class']"}
    assert 0 <= results["methods"]["neggrad"]["forget/acc"] <= 1


def test_bad_param_exits_2_with_message(capsys) -> None:
    assert main(["--params", str(ROOT / "params.yaml"), "--set", "train.lr=-1", "--quiet"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_bad_request_exits_2_before_training(capsys) -> None:
    assert main(["--params", str(ROOT / "params.yaml"), "--set", "request.classes=[42]", "--quiet"]) == 2
    assert "unknown class 42" in capsys.readouterr().err


def test_progress_shows_every_loss_and_the_overall_count(monkeypatch, capsys) -> None:
    """Plain progress (CI): a first line at once, every loss a stage reports, stages counted with an ETA."""
    monkeypatch.setenv("UNLEARNING_PLAIN", "1")
    tiny = [a for a in TINY if a != "--quiet"] + ["--set", "unlearn.methods=[salun]", "--set", "unlearn.salun={epochs: 2}"]
    assert main(["--params", str(ROOT / "params.yaml"), *tiny]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "python -m unlearning: loading" in err[0]
    salun = [line for line in err if "salun: epoch" in line]
    assert salun and "forget loss" in salun[-1] and "retain loss" in salun[-1] and "nan" not in salun[-1]
    assert any("3/3" in line and "ETA" in line for line in err), err
