"""The timed chain's stages are recorded in dvc.lock after the chain (flows/stage_guard.record_deferred): in one
batched commit, kept for a later call when that commit fails, and for what finished when the chain fails."""

from __future__ import annotations

import types

import pytest
import yaml
from flowtest_utils import make_project

from flows import stage_guard


def test_deferred_stages_go_in_one_commit_and_survive_a_failed_one(monkeypatch, tmp_path):
    calls, fail = [], [True]

    def commit(root, stages):
        calls.append(list(stages))
        if fail[0]:
            raise OSError("dvc.lock is busy")

    monkeypatch.setattr(stage_guard._dvc, "commit", commit)
    ctx = types.SimpleNamespace(root=tmp_path, parent_run_id="run-a")
    other = types.SimpleNamespace(root=tmp_path, parent_run_id="run-b")
    stage_guard._deferred.update({"run-a": ["train_base", "unlearn@finetune", "train_base"], "run-b": ["x"]})
    with pytest.raises(OSError):
        stage_guard.record_deferred(ctx)
    fail[0] = False
    assert stage_guard.record_deferred(ctx) == ["train_base", "unlearn@finetune"]  # kept, then recorded once
    assert calls == [["train_base", "unlearn@finetune"]] * 2
    assert stage_guard.record_deferred(ctx) == [] and calls[-1] == ["train_base", "unlearn@finetune"]
    assert stage_guard.record_deferred(other) == ["x"]  # another run's stages are its own
    assert "run-a" not in stage_guard._deferred and "run-b" not in stage_guard._deferred


def test_a_chain_that_fails_part_way_records_what_finished(tmp_path_factory, mlflow_template, monkeypatch,
                                                           prefect_harness):
    from flowtest_utils import new_store

    from flows.pipeline import unlearning_pipeline

    root = make_project(tmp_path_factory.mktemp("deferred"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(mlflow_template, root))
    real = stage_guard.run_stage

    def run_stage(ctx, stage, method=None, seed=None):
        if (stage, method) == ("unlearn", "neggrad"):
            raise RuntimeError("neggrad broke")
        return real(ctx, stage, method, seed)

    monkeypatch.setattr(stage_guard, "run_stage", run_stage)
    with pytest.raises(Exception, match="neggrad broke"):
        unlearning_pipeline(root=str(root))
    recorded = set(yaml.safe_load((root / "dvc.lock").read_text())["stages"])
    assert {"version_data", "train_base", "retrain_oracle", "unlearn@finetune"} <= recorded, recorded
    assert "unlearn@neggrad" not in recorded and not stage_guard._deferred
