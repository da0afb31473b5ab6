"""`bench/frontier.py`: the Pareto front it marks, and its whole default-settings path on digits (tiny recipe)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import frontier  # noqa: E402


def _point(gap: float, speedup: float) -> dict:
    return {"gap": gap, "speedup": speedup}


def test_pareto_keeps_only_undominated_points_ordered_by_speedup():
    points = {"slow-good": _point(0.5, 2.0), "fast-bad": _point(9.0, 50.0), "dominated": _point(3.0, 1.5),
              "middle": _point(2.0, 10.0), "tie-worse": _point(2.0, 9.0), "broken": _point(float("nan"), 99.0)}
    assert frontier.pareto(points) == ["slow-good", "middle", "fast-bad"]


def test_default_settings_path_writes_points_front_and_plot(tmp_path):
    out = tmp_path / "frontier.json"
    rc = frontier.main(["--data", "digits", "--model", "mlp", "--width", "0", "--epochs", "2", "--seeds", "2",
                        "--methods", "finetune,neggrad", "--scenarios", "class 3", "--no-calibrate",
                        "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    scenario = result["scenarios"]["class 3"]
    assert set(scenario["points"]) == {"finetune (default)", "neggrad (default)"}
    for p in scenario["points"].values():
        assert p["n_seeds"] == 2 and math.isfinite(p["gap"]) and p["speedup"] > 0
        assert p["gap_ci"][0] <= p["gap"] <= p["gap_ci"][1]
    assert scenario["front"] and set(scenario["front"]) <= set(scenario["points"])
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_a_setting_that_left_the_model_untouched_is_marked_and_kept_off_the_front():
    original = {"gap": 1.43, "forget": 1.0, "retain": 0.999}
    points = {"noop": {"gap": 1.43, "speedup": 80.0, "forget": 1.0, "retain": 0.999},
              "real": {"gap": 0.9, "speedup": 3.0, "forget": 0.995, "retain": 1.0},
              "close": {"gap": 1.44, "speedup": 40.0, "forget": 0.998, "retain": 0.999}}
    assert frontier.is_noop(points["noop"], original) and not frontier.is_noop(points["close"], original)
    assert frontier.pareto(points, original) == ["real", "close"]


def test_help_lists_the_scenarios(capsys):
    import pytest

    with pytest.raises(SystemExit) as done:
        frontier.parse(["--help"])
    assert done.value.code == 0 and "class 3, random 10%" in capsys.readouterr().out


def _run(scenario: str, epochs: int = 3) -> dict:
    point = {"method": "neggrad", "settings": "default", "gap": 1.5, "gap_ci": [1.0, 2.0], "speedup": 9.0,
             "speedup_ci": [8.0, 10.0], "forget": 0.0, "retain": 0.99, "test": 0.9, "mia": 1.0, "n_seeds": 3}
    res = {"points": {"neggrad (default)": point}, "front": ["neggrad (default)"], "oracle_s": 40.0,
           "calibration_s": {}, "calibration": {}, "original": {"gap": 50.0, "forget": 1.0, "retain": 1.0},
           "original_gap": 50.0, "original_gap_ci": [49.0, 51.0]}
    return {"dataset": "mnist", "model": "cnn width 16", "epochs": epochs, "seeds": 3, "methods": ["neggrad"],
            "recipe_test_acc": {}, "scenarios": {scenario: res}, "wall_s": 100.0}


def test_merge_joins_scenarios_run_side_by_side_and_refuses_another_recipe(tmp_path, capsys):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json"
    a.write_text(json.dumps(_run("class 3")))
    b.write_text(json.dumps(_run("random 10%")))
    assert frontier.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert list(merged["scenarios"]) == ["class 3", "random 10%"] and out.with_suffix(".png").exists()
    printed = capsys.readouterr().out
    assert "MIA eff" in printed and "1.50 ± 0.50" in printed  # the per-metric table, intervals as half-widths
    b.write_text(json.dumps(_run("random 10%", epochs=5)))
    import pytest

    with pytest.raises(SystemExit, match="epochs 5 differs"):
        frontier.main(["--merge", str(a), str(b), "--out", str(out)])


def test_replay_applies_a_recorded_calibration_and_reruns_only_the_retuned_methods(tmp_path):
    prior, out = tmp_path / "prior.json", tmp_path / "replay.json"
    common = ["--data", "digits", "--model", "mlp", "--width", "0", "--epochs", "2", "--seeds", "2",
              "--methods", "finetune,neggrad", "--scenarios", "class 3"]
    assert frontier.main([*common, "--no-calibrate", "--out", str(prior)]) == 0
    run = json.loads(prior.read_text())
    run["scenarios"]["class 3"]["calibration"] = {
        "finetune": {"chosen": "defaults", "values": {"lr": 0.02, "epochs": 5}, "trials": 2},
        "neggrad": {"chosen": "search", "values": {"lr": 0.01, "max_steps": 5}, "trials": 3}}
    prior.write_text(json.dumps(run))
    assert frontier.main([*common, "--calibration-from", str(prior), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["scenarios"]["class 3"]
    neggrad, finetune = res["points"]["neggrad (calibrated)"], res["points"]["finetune (calibrated)"]
    assert neggrad["values"]["lr"] == 0.01 and neggrad["values"]["max_steps"] == 5 and "same_as_default" not in neggrad
    assert finetune["same_as_default"] and finetune["gap"] == res["points"]["finetune (default)"]["gap"]
    before, after = res["original_check"]["retain"]
    assert before == after  # the same seeds retrained the same base models
    run["epochs"] = 3
    prior.write_text(json.dumps(run))
    import pytest

    with pytest.raises(SystemExit, match="epochs 3 differs"):
        frontier.main([*common, "--calibration-from", str(prior), "--out", str(out)])
