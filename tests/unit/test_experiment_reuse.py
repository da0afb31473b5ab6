"""`run_experiment(trained=...)`: experiments that differ only in method settings share bases and oracles."""

from __future__ import annotations

import pytest

import unlearning.runner.experiment as experiment
from unlearning.params import load_params


def test_a_second_experiment_reuses_the_trained_models_and_their_times(monkeypatch):
    params = load_params(None, ["train.epochs=2", "evaluate.training_seeds=[0,1]", "unlearn.methods=[neggrad]",
                                "evaluate.ain=false"])
    trained: dict = {}
    first = experiment.run_experiment(params, trained=trained)
    assert sorted(trained) == [0, 1]
    monkeypatch.setattr(experiment, "train_original", lambda *a, **k: pytest.fail("retrained a base model"))
    monkeypatch.setattr(experiment, "train_oracle", lambda *a, **k: pytest.fail("retrained an oracle"))
    second = experiment.run_experiment(params, trained=trained)
    for model in ("original", "oracle"):
        assert [r["time/s"] for r in second[model]["runs"]] == [r["time/s"] for r in first[model]["runs"]]
        assert second[model]["forget/acc"] == first[model]["forget/acc"]
