"""`python -m unlearning`: runs on tiny budgets, prints the table, writes the JSON, rejects bad params."""

from __future__ import annotations

import io
import json
from pathlib import Path

from unlearning.__main__ import Progress, main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.epochs=4", "--set", "unlearn.methods=[finetune,neggrad]",
        "--set", "unlearn.finetune={epochs: 1}", "--set", "evaluate.ain_max_steps=20", "--quiet"]


def test_runs_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "results.json"
    assert main(["--params", str(ROOT / "params.yaml"), *TINY, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("original", "oracle (retrain)", "finetune", "neggrad"):
        assert row in table
    results = json.loads(out.read_text())
    assert set(results) >= {"request", "original", "oracle", "methods"} and results["complete"] is True
    assert results["request"]["forget_classes"] == [3]
    assert results["oracle"]["forget/acc"] <= 0.05  # a retrained model never saw class 3
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


def test_progress_prints_every_loss_a_stage_reports() -> None:
    """SalUn, SCRUB and others report forget_loss / min_loss etc., not `loss`: no 'nan' in their place."""
    out = io.StringIO()
    progress = Progress(out)
    progress({"stage": "salun", "epoch": 1, "epochs": 10, "forget_loss": 0.5, "retain_loss": 0.25})
    progress({"stage": "neggrad", "epoch": 5, "epochs": 5, "loss": -3.0})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("salun: epoch 1/10 forget loss 0.5000 retain loss 0.2500")
    assert lines[1].endswith("neggrad: epoch 5/5 loss -3.0000")
