"""`bench/frontier_digest.py`: which point wins when runs are joined, and #12's checks on the joined table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import frontier_digest  # noqa: E402

RECIPE = {"dataset": "mnist", "model": "cnn width 16", "epochs": 5, "seeds": 3}


def _point(method: str, settings: str, gap: float, speedup: float) -> dict:
    return {"method": method, "settings": settings, "gap": gap, "gap_ci": [gap - 0.1, gap + 0.1],
            "speedup": speedup, "speedup_ci": None, "forget": 0.0, "retain": 0.99, "test": 0.89, "mia": 1.0}


def _run(tmp_path: Path, name: str, points: list[dict], calibration: dict | None = None, **recipe) -> Path:
    res = {"points": {f"{p['method']} ({p['settings']})": p for p in points}, "original": None,
           "original_gap": 52.0, "calibration": calibration or {},
           "calibration_s": {m: 100.0 for m in calibration or {}}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(RECIPE | recipe | {"overrides": [], "scenarios": {"class 3": res}}))
    return path


def test_a_later_search_replaces_the_earlier_outcome_and_kept_defaults_judge_the_default(tmp_path):
    old = _run(tmp_path, "old", [_point("unsir", "default", 0.4, 12.0), _point("unsir", "calibrated", 9.0, 12.0),
                                 _point("scrub", "default", 1.5, 1.0)],
               {"unsir": {"chosen": "search", "trials": 4}})
    new = _run(tmp_path, "new", [], {"unsir": {"chosen": "defaults", "trials": 9, "heldout_gap": 0.5,
                                               "heldout_default_gap": 0.5, "heldout_vetoed_gap": 20.0}})
    joined = frontier_digest.join([old, new])
    unsir = joined["scenarios"]["class 3"]["methods"]["unsir"]
    assert "calibrated" not in unsir and unsir["calibration"]["trials"] == 9
    assert frontier_digest.settled(unsir)["gap"] == 0.4
    text = frontier_digest.markdown(joined)
    assert "| unsir | 0.40 ± 0.10 | 12.0 | kept defaults |" in text
    assert "(vetoed: 20.00)" in text
    assert "within 2 points after calibration: 2 of 2" in text
    assert "within 1 point at 10x or more: unsir" in text


def test_a_search_that_chose_settings_never_run_live_counts_as_a_miss(tmp_path):
    run = _run(tmp_path, "r", [_point("finetune", "default", 0.3, 2.0)], {"finetune": {"chosen": "search"}})
    text = frontier_digest.markdown(frontier_digest.join([run]))
    assert "| finetune | 0.30 ± 0.10 | 2.0 | not run |" in text
    assert "within 2 points after calibration: 0 of 1 (missing: finetune)" in text


def test_weak_methods_are_marked_and_left_out_of_the_two_point_check(tmp_path):
    run = _run(tmp_path, "r", [_point("ssd", "default", 52.0, 5.0), _point("salun", "default", 0.1, 0.3)])
    text = frontier_digest.markdown(frontier_digest.join([run]))
    assert "| ssd (weak) |" in text and "- weak here: ssd: measured:" in text
    assert "within 2 points after calibration: 1 of 1" in text


def test_runs_of_other_recipes_are_refused(tmp_path):
    a = _run(tmp_path, "a", [_point("unsir", "default", 0.4, 12.0)])
    b = _run(tmp_path, "b", [_point("unsir", "default", 0.4, 12.0)], epochs=3)
    with pytest.raises(SystemExit, match="epochs 3 differs"):
        frontier_digest.join([a, b])
