"""`unlearn calibrate` in the pipeline: the flow writes a profile and logs its trials to MLflow; the next
`unlearn run` takes unset method settings from it, tags where each setting came from, and `--set` wins.

One project (git + DVC, digits, tiny budget), finetune only, 3 trials.
"""

from __future__ import annotations

import json

import pytest
from flowtest_utils import TINY, make_project, new_store

TRIALS = 3


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_template):
    tiny = {**TINY, ("unlearn", "methods"): ["finetune"], ("calibration", "trials"): TRIALS,
            ("calibration", "budget_s"): 900.0}
    root = make_project(tmp_path_factory.mktemp("calibrate"), tiny)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", new_store(mlflow_template, root))
        yield root


@pytest.fixture(scope="module")
def calibrated(project, prefect_harness):
    from flows.calibrate_flow import unlearning_calibrate
    from flows.context import StageContext
    from flows.settings import load
    from flows.stages import run_stage

    run_stage(StageContext(project, load(project)), "version_data")  # the split calibration draws from
    return unlearning_calibrate(root=str(project), methods=["finetune"])


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _unlearn_run(parent_run_id):
    exp = _client().get_experiment_by_name("unlearning")
    runs = _client().search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return next(r for r in runs if r.info.run_name == "unlearn[finetune]")


@pytest.mark.slow  # a calibration (3 proxy models and oracles, 3 trials) and two pipeline runs: ~2 min on 2 cores
def test_calibrate_flow_profile_trials_and_runs_that_use_it(project, calibrated):
    from flows import _dvc
    from flows.pipeline import unlearning_pipeline
    from unlearning.calibration.profile import read_profile, write_profile

    # The profile: outputs/calibration/<key hash>.json, for this request kind, with the search's trial counts.
    path = project / calibrated["profile"]
    assert path.parent == project / "outputs" / "calibration" and path.name == f"{calibrated['key']}.json"
    profile = read_profile(path)
    entry = profile["methods"]["finetune"]
    assert profile["key"]["request"] == {"scenario": "class", "classes": 1} == calibrated["request_kind"]
    assert entry["trials"] + entry["pruned"] + entry["failed"] == TRIALS
    assert set(calibrated["heldout"]["finetune"]) == {"gap", "default_gap"}
    assert _dvc.is_clean(project, "calibrate")  # recorded in dvc.lock by the flow

    # MLflow: the parent run (settings, chosen values, gaps, the profile) and one child run per trial.
    c = _client()
    parent = c.get_run(calibrated["run_id"])
    assert parent.info.run_name == "calibrate · digits/mlp · class (classes 1)"
    assert parent.data.params["calibration.trials"] == str(TRIALS)
    assert {"finetune/gap", "finetune/default_gap", "finetune/heldout_gap"} <= set(parent.data.metrics)
    assert parent.data.tags["profile_key"] == calibrated["key"] and parent.data.tags["finetune.chosen"] in (
        "search", "defaults")
    assert [a.path for a in c.list_artifacts(parent.info.run_id, "calibration")] == [f"calibration/{path.name}"]
    children = c.search_runs([parent.info.experiment_id],
                             filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len({r.data.tags["trial"] for r in children}) == len(children) == TRIALS  # optuna's numbers
    for r in children:
        assert r.data.tags["state"] in ("complete", "pruned", "fail")
        assert {"finetune.lr", "finetune.epochs"} <= set(r.data.params)
        assert ("gap" in r.data.metrics) == (r.data.tags["state"] == "complete")
    assert sum(r.data.tags["state"] == "complete" for r in children) == entry["trials"]

    # A run picks the profile up. The test sets the profile's value itself (epochs 2, lr left out), so what is
    # checked does not hang on which setting 3 random trials happened to choose.
    profile["methods"]["finetune"]["values"] = {"epochs": 2}
    write_profile(path, profile)
    first = unlearning_pipeline(root=str(project))
    run = _unlearn_run(first["parent_run_id"])
    assert run.data.tags["settings_source.epochs"] == "profile" and run.data.tags["settings_source.lr"] == "default"
    assert run.data.params["finetune.epochs"] == "2"
    assert run.data.tags["calibration.profile"] == calibrated["profile"]
    assert run.data.tags["calibration.profile_key"] == calibrated["key"]
    assert _dvc.is_clean(project, "calibrate") and _dvc.is_clean(project, "unlearn@finetune")

    # A value given with --set wins over the profile.
    second = unlearning_pipeline(root=str(project), overrides=["unlearn.finetune.epochs=3"])
    run = _unlearn_run(second["parent_run_id"])
    assert run.data.tags["settings_source.epochs"] == "params" and run.data.params["finetune.epochs"] == "3"
    lock = json.dumps(__import__("yaml").safe_load((project / "dvc.lock").read_text()))
    assert "outputs/calibration" in lock
