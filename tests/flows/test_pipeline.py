"""The pipeline end to end, under Prefect's test harness, on a temporary copy of the project (git + DVC)
with its own sqlite MLflow store: first run, second run (reuse), DVC bookkeeping, a deletion request.

The runs build on each other (module-scoped fixtures), so the expensive work happens once.
"""

from __future__ import annotations

import json
import os

import pytest
from flowtest_utils import dvc, git, make_project, new_store


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_template):
    root = make_project(tmp_path_factory.mktemp("project"))
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = new_store(mlflow_template, root)
    yield root
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _run(root):
    """The pipeline's result, with each model's stable record and what this run did with it side by side."""
    from flows.pipeline import unlearning_pipeline
    from flows.records import StageRun

    out = unlearning_pipeline(root=str(root))
    runs = {role: StageRun.read(root / "outputs" / "runs" / f"{role}.json") for role in ("base", "oracle")}
    return {"parent_run_id": out["parent_run_id"], "production": out["promotion"].production,
            "table": out["promotion"].table,
            **{role: {**out[role].model_dump(), **runs[role].model_dump()} for role in ("base", "oracle")}}


@pytest.fixture(scope="module")
def first(project, prefect_harness):
    return _run(project)


@pytest.fixture(scope="module")
def second(project, first):
    return _run(project)


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _children(parent_run_id):
    c = _client()
    exp = c.get_experiment_by_name("unlearning")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_first_run_tracks_registers_and_promotes(project, first):
    runs = _children(first["parent_run_id"])
    names = sorted(r.info.run_name.split(" ")[0] for r in runs)
    assert names == sorted(["version_data", "train_base", "retrain_oracle", "unlearn[finetune]", "unlearn[neggrad]",
                            "evaluate[finetune]", "evaluate[neggrad]", "register_and_promote",
                            "retrain_oracle"])  # the second retrain of the band (training_seeds [0, 1])
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["data_hash"] and r.data.tags["git_commit"] and r.data.tags["device"] == "cpu"
    ev = next(r for r in runs if r.info.run_name == "evaluate[finetune]")
    for key in ("forget/acc", "retain/acc", "test/acc", "mia/entropy_lr", "zrf", "oracle/js", "time/s", "speedup"):
        assert key in ev.data.metrics, key
    arts = {a.path for a in _client().list_artifacts(ev.info.run_id, "plots")}
    assert {"plots/per_class_accuracy.png", "plots/confusion_matrix.png", "plots/mia_histogram.png"} <= arts
    unl = next(r for r in runs if r.info.run_name == "unlearn[neggrad]")
    assert unl.data.tags["data_touched"] == "forget" and unl.data.tags["method"] == "neggrad"
    _check_what_the_ui_shows(project, first, runs)

    c = _client()
    versions = {str(v.version): v for v in c.search_model_versions("name='digits-mlp'")}
    roles = sorted(v.tags["role"] for v in versions.values())
    assert roles == ["base", "oracle", "oracle-band", "unlearned", "unlearned"]
    band = json.loads((project / "outputs/metrics/oracle_band.json").read_text())["runs"]
    assert [r["training_seed"] for r in band] == [0, 1]
    oracle_run = next(r for r in runs if r.info.run_name == "retrain_oracle")
    assert oracle_run.data.metrics["band/n_seeds"] == 2.0
    assert oracle_run.data.metrics["band/mia/entropy_lr/ci_low"] <= oracle_run.data.metrics["band/mia/entropy_lr"]
    for v in versions.values():
        assert v.source.startswith("models:/m-")
    rm = c.get_registered_model("digits-mlp")
    assert {"candidate-finetune", "candidate-neggrad", "production"} <= set(rm.aliases)
    prod = versions[str(rm.aliases["production"])]
    assert prod.tags["gates"] == "passed" and prod.tags["role"] == "unlearned"
    assert prod.tags["data_hash"] == first["base"]["data_hash"]
    assert first["production"] == str(prod.version)
    assert (project / "dvc.lock").exists() and "path: data\n" in (project / "dvc.lock").read_text()
    metrics = json.loads((project / "outputs/metrics/finetune.json").read_text())
    assert 0.0 <= metrics["forget/acc"] <= 1.0
    assert "\nfinetune " in first["table"] and "gates (points)" in first["table"]


def _check_what_the_ui_shows(project, first, runs):
    """What a user of the MLflow UI relies on: a model-training experiment, the method and its hyperparameters
    as params of the evaluate runs, numeric gates, the data version as an input, a summary on the parent."""
    c = _client()
    assert c.get_experiment_by_name("unlearning").tags["mlflow.experimentKind"] == "custom_model_development"
    ev = next(r for r in runs if r.info.run_name == "evaluate[neggrad]")
    assert ev.data.params["method"] == "neggrad" and "neggrad.lr" in ev.data.params
    assert ev.data.params["evaluate.oracle"] == "True"
    unl = next(r for r in runs if r.info.run_name == "unlearn[neggrad]")
    assert {k: v for k, v in unl.data.params.items() if k.startswith("neggrad.") or k == "method"} == {
        k: v for k, v in ev.data.params.items() if k.startswith("neggrad.") or k == "method"}
    # The gates promote decided, as numbers on each evaluate run (same names for every method).
    promote = next(r for r in runs if r.info.run_name == "register_and_promote").data.metrics
    for method in ("finetune", "neggrad"):
        metrics = next(r for r in runs if r.info.run_name == f"evaluate[{method}]").data.metrics
        gates = {k: v for k, v in metrics.items() if k.startswith("gate/")}
        assert gates and gates == {k.replace(f"gate/{method}/", "gate/"): v for k, v in promote.items()
                                   if k.startswith(f"gate/{method}/")}
        assert metrics["gates/passed"] == promote[f"gates_passed/{method}"]
    # The data version as the input dataset of the runs that read it.
    data_hash = first["base"]["data_hash"]
    for r in runs:
        stage = r.data.tags["pipeline.stage"]
        inputs = c.get_run(r.info.run_id).inputs.dataset_inputs
        if stage in ("train_base", "retrain_oracle", "unlearn", "evaluate"):
            assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("digits", data_hash)], r.info.run_name
            assert inputs[0].dataset.source.endswith('/data"}') and inputs[0].tags[0].key == "mlflow.data.context"
        else:
            assert not inputs, r.info.run_name
    parent = c.get_run(first["parent_run_id"]).data
    assert parent.metrics["methods/total"] == 2 and parent.metrics["methods/passed"] >= 1
    best = parent.tags["best_method"]
    best_metrics = json.loads((project / f"outputs/metrics/{best}.json").read_text())
    assert parent.metrics["best/forget/acc"] == best_metrics["forget/acc"]
    assert {"original/test/acc", "oracle/forget/acc", "best/retain/acc"} <= set(parent.metrics)


def test_second_run_reuses_base_and_oracle_and_makes_no_run_for_them(project, first, second):
    assert first["base"]["source"] == "trained" and first["oracle"]["source"] == "trained"
    assert second["base"]["source"] == "reused" and second["oracle"]["source"] == "reused"
    assert second["base"]["reused_from"] == first["base"]["run_id"] and second["base"]["run_id"] is None
    # Reused and unchanged stages make no run: only the stages that ran again have one; the parent lists the rest.
    runs = {r.info.run_name.split(" ")[0] for r in _children(second["parent_run_id"])}
    assert runs == {"version_data", "register_and_promote"}
    parent = _client().get_run(second["parent_run_id"]).data
    reused = parent.tags["reused_stages"].split("; ")
    assert reused[:3] == [f"train_base (reused) from run {first['base']['run_id']}",
                          f"retrain_oracle (reused) from run {first['oracle']['run_id']}",
                          "retrain_oracle seed 1 (reused) from run " + reused[2].rsplit(" ", 1)[-1]]
    assert {r.split(" from ")[0] for r in reused[3:]} == {"unlearn[finetune] (unchanged)", "unlearn[neggrad] (unchanged)",
                                                      "evaluate[finetune] (unchanged)", "evaluate[neggrad] (unchanged)"}
    assert parent.metrics["pipeline/reused_stages"] == 7
    # Unchanged per `dvc status`: not re-run, no new model versions, production unchanged.
    assert len(_client().search_model_versions("name='digits-mlp'")) == 5  # base, 2 oracles, 2 unlearned
    assert second["production"] == first["production"]


def test_dvc_status_clean_after_runs(project, second):
    out = dvc(project, "status")
    assert "up to date" in out.stdout, out.stdout + out.stderr
    out = dvc(project, "repro")
    assert "Running stage" not in out.stdout, out.stdout


def test_one_methods_settings_touch_only_its_stages(project, second):
    params = project / "params.yaml"
    text = params.read_text()
    try:
        params.write_text(text.replace("neggrad: {}", "neggrad: {lr: 0.01}"))
        assert params.read_text() != text
        # `dvc status` lists the stage whose own params changed; evaluate@neggrad follows through its dep on
        # outputs/unlearn/neggrad. No other method's stages, no training stage.
        out = dvc(project, "status", "--json")
        assert set(json.loads(out.stdout)) == {"unlearn@neggrad"}, out.stdout
    finally:
        params.write_text(text)


def test_bad_gate_name_fails_at_load_before_any_run(project, second, capsys):
    from flows.cli import main

    exp = _client().get_experiment_by_name("unlearning")
    before = len(_client().search_runs([exp.experiment_id]))
    assert main(["run", "--root", str(project), "--set", "promote.gates.mia_vs_orcale=5"]) == 2
    assert "promote.gates.mia_vs_orcale" in capsys.readouterr().err
    assert len(_client().search_runs([exp.experiment_id])) == before


@pytest.mark.slow  # three stage processes (torch + mlflow imports each): 60-100 s on 2 busy cores
def test_dvc_exp_run_gives_an_experiment_with_metrics_in_the_project_store(project, second, monkeypatch):
    git(project, "add", "-A")
    git(project, "commit", "-qm", "after pipeline run")
    store = os.environ["MLFLOW_TRACKING_URI"]
    assert store == f"sqlite:///{project / 'mlflow.db'}"  # the default tracking.uri, spelled out by the fixture
    before = {r.info.run_id for r in _client().search_runs([_client().get_experiment_by_name("unlearning").experiment_id])}
    # The default store (tracking.uri: sqlite:///mlflow.db), as a user has it: the experiment runs in a
    # temporary copy under .dvc/tmp/exps/, and its runs must still land in the project's mlflow.db.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    out = dvc(project, "exp", "run", "--temp", "-S", "unlearn.methods=[finetune]", check=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train_base' didn't change" in out.stdout  # only what the change touches re-runs
    new = [r for r in _client().search_runs([_client().get_experiment_by_name("unlearning").experiment_id])
           if r.info.run_id not in before]
    assert "register_and_promote" in [r.info.run_name for r in new], [r.info.run_name for r in new]
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert exps, shown
    data = exps[0]["revs"][0]["data"]
    assert list(data["metrics"]) == ["outputs/summary.json"]  # the small summary only
    summary = data["metrics"]["outputs/summary.json"]["data"]
    assert set(summary) == {"original", "oracle", "finetune"} and "forget/acc" in summary["finetune"]
    assert data["params"]["params.yaml"]["data"]["unlearn"]["methods"] == ["finetune"]


def test_deletion_request_goes_to_a_version_that_leads_back(project, second, prefect_harness):
    from flows import deletions
    from flows.cli import main
    from flows.ledger import Ledger
    from flows.settings import load

    ids = list(range(100, 120))
    assert main(["request", "--root", str(project), "--ids", ",".join(map(str, ids))]) == 0
    ledger = Ledger(project, load(project))
    pending = [r for r in deletions.load_all(ledger) if r["status"] == "pending"]
    assert len(pending) == 1 and pending[0]["n_ids"] == 20
    production_before = _client().get_model_version_by_alias("digits-mlp", "production").version

    out = _run(project)
    assert out["base"]["source"] == f"production v{production_before}"  # unlearning starts from production
    req = deletions.load_all(ledger)[0]
    assert req["status"] in ("done", "refused"), req
    split = json.loads((project / "outputs/version_data/split.json").read_text())
    assert split["source"] == "deletion requests" and split["forget_ids"] == ids
    deleted = json.loads((project / "data/deletions.json").read_text())
    assert deleted["pending"][0]["hash"] == req["hash"]
    assert (project / "data/ids_retained.npy").exists()

    c = _client()
    versions = [v for v in c.search_model_versions("name='digits-mlp'") if v.tags.get("requests") == req["hash"]]
    assert versions and all(v.tags["data_hash"] == split["data_hash"] for v in versions)
    if req["status"] == "done":
        v = c.get_model_version_by_alias("digits-mlp", "production")
        assert str(v.version) == req["result"]["version"] and v.tags["requests"] == req["hash"]
        assert req["hash"] in v.tags["honours"].split(",")
        assert str(c.get_model_version_by_alias("digits-mlp", "previous").version) == str(production_before)
    else:
        assert req["result"]["reasons"]
    assert dvc(project, "status").stdout.strip().endswith("up to date.")


def _task_runs(state) -> list[str]:
    """The names of the Prefect task runs of one flow run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[
            state.state_details.flow_run_id])))
    return sorted(r.name for r in runs)


def _seeded_run(project, more_seeds):
    """A recorded run (no --set) with `evaluate.more_seeds` set in params.yaml: its result and Prefect tasks."""
    import re

    from flows.pipeline import unlearning_pipeline

    params = project / "params.yaml"
    params.write_text(re.sub(r"more_seeds: \[[0-9, ]*\]", f"more_seeds: {more_seeds}", params.read_text()))
    state = unlearning_pipeline(root=str(project), return_state=True)
    return state.result(), _task_runs(state)


def test_each_method_and_seed_is_a_stage_of_its_own(project, second, prefect_harness):
    """evaluate.more_seeds: one Prefect task, MLflow run and DVC stage per (method, seed); a second run keeps
    them (dvc status clean); a seed dropped from params is no longer scored."""
    params = project / "params.yaml"
    text = params.read_text()
    assert "more_seeds: []" in text
    try:
        _check_seed_stages(project)
    finally:
        params.write_text(text)  # the tests after this one see params.yaml as it was


def _check_seed_stages(project):
    seeds = ["unlearn[finetune/seed-1]", "unlearn[finetune/seed-2]", "unlearn[neggrad/seed-1]",
             "unlearn[neggrad/seed-2]"]
    out, tasks = _seeded_run(project, [1, 2])
    # The stages, plus the task that records the timed chain's stages in dvc.lock (stage_guard.record_deferred).
    assert set(seeds) <= set(tasks) and len(tasks) == len(set(tasks)) == 3 + 2 * (1 + 2 + 1) + 1 + 1, tasks
    assert "record chained stages" in tasks
    assert set(seeds) <= set(out["stages"]) and all(out["stages"][s] > 0 for s in seeds)
    made = {r.info.run_name: r for r in _children(out["parent_run_id"])}
    assert set(seeds) <= set(made)
    assert made["unlearn[finetune/seed-2]"].data.tags["seed"] == "2"
    assert made["unlearn[finetune/seed-2]"].data.params["seed"] == "2" and "time/s" in made[seeds[0]].data.metrics
    assert "registered_version" not in made[seeds[0]].data.tags  # only the first seed's model is registered
    for method in ("finetune", "neggrad"):
        runs = json.loads((project / f"outputs/evaluate/{method}/runs.json").read_text())["runs"]
        assert [r["seed"] for r in runs] == [0, 1, 2]
        assert (project / f"outputs/unlearn_seed/{method}/seed-2/model.pt").exists()
    metrics = json.loads((project / "outputs/metrics/finetune.json").read_text())
    assert metrics["n_seeds"] == 3 and metrics["ci"]["retain/acc"][0] <= metrics["retain/acc"]
    assert "3 unlearning seed(s)" in out["promotion"].table
    lock = (project / "dvc.lock").read_text()
    assert "unlearn_seed@finetune-2:" in lock and "unlearn_seed@neggrad-1:" in lock
    assert "up to date" in dvc(project, "status").stdout  # as the run left it: nothing for `dvc repro` to do
    assert "Running stage" not in dvc(project, "repro").stdout

    again, tasks = _seeded_run(project, [1, 2])  # nothing changed: every seed stage kept, no run made
    assert set(seeds) <= set(tasks)
    assert not {r.info.run_name for r in _children(again["parent_run_id"])} & set(seeds)
    reused = _client().get_run(again["parent_run_id"]).data.tags["reused_stages"]
    assert all(f"{s} (unchanged)" in reused for s in seeds), reused

    dropped, tasks = _seeded_run(project, [1])  # seed 2 leaves params: not run, not scored, its model gone
    assert not [t for t in tasks if "seed-2" in t] and "unlearn[finetune/seed-1]" in tasks
    reused = _client().get_run(dropped["parent_run_id"]).data.tags["reused_stages"]
    assert "unlearn[finetune/seed-1] (unchanged)" in reused, reused
    runs = json.loads((project / "outputs/evaluate/finetune/runs.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert not (project / "outputs/unlearn_seed/finetune/seed-2").exists()
    assert "2 unlearning seed(s)" in dropped["promotion"].table
    assert "up to date" in dvc(project, "status").stdout


def test_unlearning_seeds_give_each_method_intervals_over_seeds(project, second, prefect_harness):
    """Last in the file: a run with --set changes outputs/ without recording them in dvc.lock."""
    from flows.pipeline import unlearning_pipeline

    out = unlearning_pipeline(root=str(project), overrides=["evaluate.seeds=[0,1]"])
    assert "unlearn[finetune/seed-1]" in out["stages"]
    assert (project / "outputs/unlearn_seed/finetune/seed-1/model.pt").exists()
    runs = json.loads((project / "outputs/evaluate/finetune/runs.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    metrics = json.loads((project / "outputs/metrics/finetune.json").read_text())
    assert metrics["n_seeds"] == 2 and metrics["ci"]["retain/acc"][0] <= metrics["retain/acc"]
    assert "2 unlearning seed(s)" in out["promotion"].table
    assert (project / "outputs/runs/report.html").read_text().count("<svg") >= 3
