"""`budget_hint`: a search the wall-time budget cut short before TPE could start is named, with a budget
that would fit; one ended by its trial count, or one that ran enough trials, is not."""

from __future__ import annotations

from unlearning.calibration.search import MethodSearch, budget_hint
from unlearning.config import CalibrationConfig


def _search(trials: int, wall_s: float, pruned: int = 0) -> MethodSearch:
    return MethodSearch("finetune", {}, {}, "defaults", 1.0, 1.0, {}, 1.0, 1.0, trials, pruned, 0, wall_s)


def test_a_budget_that_fits_one_trial_says_so_and_sizes_the_budget():
    settings = CalibrationConfig(trials=8, budget_s=150.0, startup_trials=5)
    hint = budget_hint(_search(trials=1, wall_s=282.0), settings)
    # 282 s for the defaults' scoring and one trial: 141 s a trial, 9 x 141 s for the defaults and 8 trials
    assert hint == ("finetune: the 150 s budget stopped the search after 1 of 8 trials (about 141 s each); "
                    "calibration.budget_s=1270 would fit them all")


def test_no_hint_when_the_trial_count_or_enough_trials_ended_the_search():
    settings = CalibrationConfig(trials=8, budget_s=150.0, startup_trials=5)
    assert budget_hint(_search(trials=3, pruned=2, wall_s=160.0), settings) is None  # 5 ran: TPE had started
    assert budget_hint(_search(trials=2, wall_s=90.0), settings) is None  # under budget: trials ended it
    assert budget_hint(_search(trials=2, wall_s=90.0), CalibrationConfig(trials=2, budget_s=60.0)) is None


def test_the_calibrate_table_names_a_search_the_budget_cut_short(tmp_path, capsys):
    import pytest

    pytest.importorskip("optuna")
    from unlearning.__main__ import main

    args = ["calibrate", "--set", f"calibration.profile_dir={tmp_path}", "--set", "train.epochs=2",
            "--set", "unlearn.methods=[finetune]", "--set", "calibration.proxies=1", "--set", "calibration.trials=6",
            "--set", "calibration.budget_s=0.01", "--no-live", "--quiet"]
    assert main(args) == 0
    assert "finetune: the 0.01 s budget stopped the search after 0 of 6 trials" in capsys.readouterr().out
