"""What the MLflow UI is given: the experiment's kind, reused stages without runs of their own, the
method's effective hyperparameters as params, the data version as a run input."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def project(tmp_path, tracking):
    """A folder and its params (digits, mlp: the defaults) over the test's own tracking store."""
    from unlearning.params import parse_params

    return tmp_path, parse_params({"data": {"name": "digits"}})


def _client():
    import mlflow

    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def test_a_new_experiment_opens_as_model_training(project):
    from flows.tracking import setup_mlflow

    root, params = project
    exp_id = setup_mlflow(root, params)
    assert _client().get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_existing_experiment_gets_the_kind_and_a_chosen_kind_is_kept(project):
    from flows import tracking

    root, params = project
    c = _client()
    plain = c.create_experiment(params.tracking.experiment)  # made before the kind was set
    chosen = c.create_experiment("other", tags={"mlflow.experimentKind": "genai_development"})
    tracking.setup_mlflow(root, params)
    tracking.mark_model_training(c, c.get_experiment(chosen))
    assert c.get_experiment(plain).tags["mlflow.experimentKind"] == "custom_model_development"
    assert c.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_a_reused_stage_makes_no_run_and_is_listed_on_the_parent(project):
    from flows.tracking import setup_mlflow, stage_run

    root, params = project
    c = _client()
    exp_id = setup_mlflow(root, params)
    parent = c.create_run(exp_id, run_name="pipeline").info.run_id
    for name in ("train_base (reused)", "unlearn[scrub] (reused)"):
        with stage_run(root, params, "train_base", run_name=name, parent_run_id=parent, reused=True,
                       tags={"reused_from": "abc"}) as run:
            run.log_params({"train.lr": "0.1"})
            run.log_metrics({"time/s": 1.0})
            run.set_tags({"model_uri": "models:/m-1"})
    assert run.run_id is None
    assert [r.info.run_id for r in c.search_runs([exp_id])] == [parent]  # nothing but the parent
    data = c.get_run(parent).data
    assert data.tags["reused_stages"] == "train_base (reused) from run abc; unlearn[scrub] (reused) from run abc"
    assert data.metrics["pipeline/reused_stages"] == 2.0 and not data.params


def test_a_stage_that_reads_the_data_logs_its_version_as_input(project):
    from flows.tracking import stage_run

    root, params = project
    with stage_run(root, params, "unlearn", run_name="unlearn[x]", parent_run_id=None,
                   tags={"data_hash": "0123456789abcdef0123456789abcdef"}) as run:
        pass
    with stage_run(root, params, "register_and_promote", run_name="promote", parent_run_id=None,
                   tags={"data_hash": "0123456789abcdef0123456789abcdef"}) as other:
        pass
    (given,) = _client().get_run(run.run_id).inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest) == ("digits", "0123456789abcdef0123456789abcdef")
    assert str((root / "data").resolve()) in given.dataset.source
    assert [(t.key, t.value) for t in given.tags] == [("mlflow.data.context", "unlearning")]
    assert not _client().get_run(other.run_id).inputs.dataset_inputs  # it reads no data


class _Split:
    def __init__(self, n_forget: int, n_retain: int = 1_300) -> None:
        self.forget_idx = list(range(n_forget))
        self.retain_idx = list(range(n_forget, n_forget + n_retain))


def test_scrub_params_are_the_values_it_runs_with():
    from flows.tracking import method_params
    from unlearning.methods.scrub import PRESETS, ScrubConfig

    small = method_params("scrub", ScrubConfig(), _Split(140), seed=0)
    assert "None" not in small.values()
    assert small["method"] == "scrub" and small["scrub.preset"] == "tiny"
    assert small["scrub.msteps"] == "5" and small["scrub.lr"] == str(PRESETS["tiny"]["lr"])
    large = method_params("scrub", ScrubConfig(lr=0.01), _Split(5000), seed=0)
    assert large["scrub.preset"] == "large_scale" and large["scrub.optimizer"] == "sgd"
    assert large["scrub.lr"] == "0.01"  # a value that was set wins over the preset
    assert large["scrub.lr_decay_epochs"] == "[3, 5, 9]" and large["scrub.rewind"] == "False"
    assert method_params("scrub", ScrubConfig(), _Split(600, 59_400), seed=0)["scrub.preset"] == "large_scale"


def test_a_config_without_run_time_defaults_is_logged_as_it_is():
    from flows.tracking import method_params
    from unlearning.methods import METHODS

    cfg = METHODS.get("neggrad").config()
    assert method_params("neggrad", cfg, _Split(10), seed=0) == {
        "method": "neggrad", **{f"neggrad.{k}": str(v) for k, v in cfg.model_dump().items()}}


def test_no_method_logs_none_and_each_logs_what_it_runs_with():
    """Every config's run-time choices are what a run on this split uses (finetune: the task's optimiser;
    ∇τ: α_0 from the forget fraction; UNSIR: noise copies; Bad Teaching: the teacher seed)."""
    from flows.tracking import method_params
    from unlearning.config import RequestConfig
    from unlearning.datasets import load_dataset
    from unlearning.methods import METHODS
    from unlearning.requests import resolve

    split = resolve(RequestConfig(classes=[3]), load_dataset("digits"))
    logged = {m: method_params(m, METHODS.get(m).config(), split, seed=7) for m in METHODS.names()}
    off = {"retrain.recipe.grad_clip", "retrain.recipe.mnemonic"}  # None means "not used" there, not "auto"
    unset = {k for p in logged.values() for k, v in p.items() if v == "None"}
    assert unset == off, unset - off
    assert logged["retrain"]["retrain.recipe.augment"] == "False"  # digits: no crop + flip
    assert logged["finetune"]["finetune.optimizer"] == "sgd" and logged["finetune"]["finetune.lr"] == "0.02"
    assert float(logged["nabla_tau"]["nabla_tau.alpha0"]) == min(1.0, 5 / 3 * split.forget_fraction)
    assert logged["unsir"]["unsir.noise_repeats"] == "1" and logged["bad_teaching"]["bad_teaching.teacher_seed"] == "7"
