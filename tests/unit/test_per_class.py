"""`bench/per_class.py`: refusals before any training, and a whole tiny run over two classes and two seeds."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import per_class  # noqa: E402


@pytest.mark.parametrize("args, message", [(["--methods", "nope"], "nope"),
                                           (["--methods", "ssd", "--classes", "3,10"], "classes 0-9")])
def test_bad_input_fails_before_any_training(tmp_path, args, message):
    out = tmp_path / "pc.json"
    with pytest.raises(SystemExit, match=message):
        per_class.main(["--epochs", "1", *args, "--out", str(out)])
    assert not out.exists()


def test_tiny_run_scores_every_class_and_method(tmp_path):
    out = tmp_path / "pc.json"
    rc = per_class.main(["--epochs", "2", "--seeds", "0,1", "--methods", "neggrad,ssd", "--classes", "1,3",
                         "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 2 * 2 * 2
    assert {(r["seed"], r["class"], r["method"]) for r in result["rows"]} == {
        (s, c, m) for s in (0, 1) for c in (1, 3) for m in ("neggrad", "ssd")}
    for m, s in result["summary"].items():
        gaps = [r["gap"] for r in result["rows"] if r["method"] == m]
        assert all(math.isfinite(g) for g in gaps)
        assert math.isclose(s["mean_gap"], sum(gaps) / len(gaps))
        assert s["ci"][0] <= s["mean_gap"] <= s["ci"][1] and s["requests"] == 4
        assert s["worst_gap"] == max(s["by_class"].values())
    assert out.with_suffix(".png").stat().st_size > 5_000
