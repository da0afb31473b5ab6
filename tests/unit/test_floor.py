"""`bench/floor.py`: the grid it expands, its refusal of a bad point before training, and a whole tiny run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402


def test_grid_is_the_cartesian_product_of_yaml_scalars():
    points = floor.grid_points(["lr=1e-3,0.01", "stop_forget_acc=0", "flag=true"])
    assert points == [{"lr": 1e-3, "stop_forget_acc": 0, "flag": True}, {"lr": 0.01, "stop_forget_acc": 0, "flag": True}]
    with pytest.raises(SystemExit, match="KEY=V1,V2"):
        floor.grid_points(["lr"])


def test_an_invalid_point_fails_before_any_training(tmp_path):
    out = tmp_path / "floor.json"
    with pytest.raises(Exception, match="lr"):
        floor.main(["--epochs", "1", "--method", "neggrad", "--grid", "lr=-1", "--out", str(out)])
    assert not out.exists()


def test_tiny_run_scores_every_point_and_picks_the_lowest_gap_per_seed(tmp_path):
    out = tmp_path / "floor.json"
    rc = floor.main(["--epochs", "2", "--seeds", "0,1", "--method", "neggrad", "--grid", "lr=1e-4,1e-3",
                     "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"0", "1"}
    for seed, run in result["runs"].items():
        gaps = [r["gap"] for r in run["rows"]]
        assert len(gaps) == 2 and all(math.isfinite(g) for g in gaps)
        assert result["best_per_seed"][seed]["gap"] == min(gaps)
    assert len(result["mean_gap"]) == 2
    assert out.with_suffix(".png").stat().st_size > 5_000
