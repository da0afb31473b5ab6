"""The pieces of running stages on Dask workers, fast and without a cluster: the task runner chosen from params,
the resource annotations, the preflight refusals, and a worker's workspace built from a payload (data pulled
from a local DVC remote, outputs uploaded to and applied from MLflow artifacts)."""

from __future__ import annotations

import pytest
from flowtest_utils import make_project

from unlearning.params import parse_params


def _params(**orchestration):
    return parse_params({"orchestration": orchestration, "unlearn": {"methods": ["finetune"], "finetune": {}}})


def test_threads_is_the_default_runner():
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runner import annotate, build_runner, is_dask

    params = _params()
    assert not is_dask(params) and isinstance(build_runner(params), ThreadPoolTaskRunner)
    with annotate(params, "unlearn"):
        import dask

        assert dask.get_annotations() == {}


def test_dask_runner_connects_to_the_address_and_the_env_wins(monkeypatch):
    from prefect_dask import DaskTaskRunner

    from flows.runner import build_runner

    monkeypatch.delenv("UNLEARN_DASK_ADDRESS", raising=False)
    runner = build_runner(_params(task_runner="dask", address="tcp://10.0.0.1:8786"))
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.1:8786"
    monkeypatch.setenv("UNLEARN_DASK_ADDRESS", "tcp://10.0.0.2:8786")
    assert build_runner(_params(task_runner="dask", address="tcp://10.0.0.1:8786")).address == "tcp://10.0.0.2:8786"


def test_dask_runner_without_address_starts_a_local_cluster_declaring_the_resources(monkeypatch):
    from flows.runner import build_runner

    monkeypatch.delenv("UNLEARN_DASK_ADDRESS", raising=False)
    runner = build_runner(_params(task_runner="dask", workers=3, resources={"GPU": 1}))
    assert runner.address is None
    assert runner.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True,
                                     "dashboard_address": None, "resources": {"GPU": 1.0}}


def test_per_method_stages_ask_for_the_resources():
    import dask

    from flows.runner import annotate

    params = _params(task_runner="dask", resources={"GPU": 1})
    for stage in ("unlearn", "unlearn_seed", "evaluate"):
        with annotate(params, stage):
            assert dask.get_annotations() == {"resources": {"GPU": 1.0}}
    with annotate(params, "train_base"):
        assert dask.get_annotations() == {}


def test_resources_no_worker_declares_are_refused():
    from flows.runner import check_resources

    class Client:
        def scheduler_info(self, n_workers):
            return {"workers": {"a": {"resources": {}}, "b": {"resources": {"GPU": 1}}}}

    check_resources(Client(), {"GPU": 1})
    with pytest.raises(RuntimeError, match="no worker of the Dask cluster declares them"):
        check_resources(Client(), {"GPU": 2})


@pytest.mark.parametrize("uri, remote, message", [
    ("sqlite:////tmp/x/mlflow.db", "/tmp/remote", "cannot reach the local tracking store"),
    ("file:///tmp/mlruns", "/tmp/remote", "cannot reach the local tracking store"),
    ("http://mlflow:5000", None, "no DVC remote for workers"),
])
def test_preflight_refuses_a_remote_cluster_without_shared_stores(tmp_path, monkeypatch, uri, remote, message):
    from flows.preflight import PreflightError, check_orchestration

    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    monkeypatch.delenv("UNLEARN_DVC_REMOTE", raising=False)
    monkeypatch.delenv("UNLEARN_DASK_ADDRESS", raising=False)
    params = _params(task_runner="dask", address="tcp://10.0.0.1:8786", dvc_remote=remote)
    with pytest.raises(PreflightError, match=message) as err:
        check_orchestration(tmp_path, params, uri)
    assert "\n" not in str(err.value)


def test_preflight_accepts_a_server_and_a_remote_and_a_local_cluster(tmp_path, monkeypatch):
    from flows.preflight import PreflightError, check_orchestration

    monkeypatch.delenv("UNLEARN_DASK_ADDRESS", raising=False)
    monkeypatch.delenv("UNLEARN_DVC_REMOTE", raising=False)
    check_orchestration(tmp_path, _params(), "sqlite:////x.db")  # threads: nothing to check
    with pytest.raises(PreflightError, match="not a DVC project"):
        check_orchestration(tmp_path, _params(task_runner="dask"), "sqlite:////x.db")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    check_orchestration(tmp_path, _params(task_runner="dask"), "sqlite:////x.db")  # local cluster: same machine
    monkeypatch.setenv("UNLEARN_DVC_REMOTE", "s3://bucket/path")
    check_orchestration(tmp_path, _params(task_runner="dask", address="tcp://h:8786"), "http://mlflow:5000")


@pytest.fixture
def versioned(tmp_path, tracking):
    """A project whose data version is recorded in dvc.lock and pushed to a local DVC remote."""
    from flows import _dvc
    from flows.context import StageContext
    from flows.settings import load
    from flows.version_data import version_data
    from flows.workspace import push_data

    root = make_project(tmp_path / "driver")
    params = load(root)
    version_data(StageContext(root, params))
    _dvc.commit(root, ["version_data"])
    push_data(root, str(tmp_path / "remote"))
    return root, params


def _payload(root, params, remote, **change):
    from flows.workspace import Payload, small_files, split_hash

    fields = {"stage": "train_base", "method": None, "seed": None, "params": params, "parent_run_id": "x",
              "tracking_uri": "", "files": small_files(root), "checkpoints": {}, "dvc_remote": remote,
              "data_hash": split_hash(root)}
    return Payload(**{**fields, **change})


def test_a_workspace_is_built_from_the_payload_and_the_remote_alone(versioned, tmp_path):
    from flows.datastore import content_hash
    from flows.workspace import build

    root, params = versioned
    ws = build(_payload(root, params, str(tmp_path / "remote")), tmp_path / "worker")
    assert ws.is_relative_to(tmp_path / "worker")
    assert content_hash(ws) == content_hash(root)  # the data version, pulled from the remote
    assert (ws / "outputs/version_data/split.json").read_bytes() == (root / "outputs/version_data/split.json").read_bytes()
    assert (ws / "dvc.lock").read_text() == (root / "dvc.lock").read_text()
    assert not list((ws / "outputs").rglob("*.pt"))


def test_a_workspace_refuses_data_that_is_not_the_runs(versioned, tmp_path):
    from flows.workspace import build

    root, params = versioned
    with pytest.raises(RuntimeError, match="is not this run's"):
        build(_payload(root, params, str(tmp_path / "remote"), data_hash="0" * 32), tmp_path / "worker")
    with pytest.raises(ValueError, match="not a relative path inside the workspace"):
        build(_payload(root, params, str(tmp_path / "remote"), files={"../escape": b"x"}), tmp_path / "worker2")


def test_outputs_travel_back_through_mlflow_artifacts_checked_by_hash(tmp_path, tracking):
    import mlflow

    from flows.workspace import Bundle, apply, snapshot, upload

    ws, driver = tmp_path / "ws", tmp_path / "driver"
    (ws / "outputs/base").mkdir(parents=True)
    (ws / "outputs/base/old.json").write_text("{}")
    (ws / "outputs/base/same.json").write_text("same")
    (driver / "outputs/base").mkdir(parents=True)
    (driver / "outputs/base/old.json").write_text("{}")
    before = snapshot(ws)
    (ws / "outputs/base/old.json").unlink()
    (ws / "outputs/base/model.pt").write_bytes(b"weights")
    (ws / "outputs/base/same.json").write_text("same")
    client = mlflow.MlflowClient()  # no mlflow.set_experiment: it would stay active for the next tests
    run = client.create_run(client.create_experiment("t"))
    bundle = upload(ws, before, run.info.run_id, "train_base/abc")
    assert set(bundle.files) == {"outputs/base/model.pt"} and bundle.removed == ["outputs/base/old.json"]
    origins = apply(driver, bundle, run.info.run_id)
    assert (driver / "outputs/base/model.pt").read_bytes() == b"weights"
    assert not (driver / "outputs/base/old.json").exists()
    assert origins == {"outputs/base/model.pt": f"runs:/{run.info.run_id}/stages/train_base/abc/outputs/base/model.pt"}
    forged = Bundle(bundle.artifact_path, {"outputs/base/model.pt": "0" * 64})
    with pytest.raises(RuntimeError, match="sha256"):
        apply(tmp_path / "other", forged, run.info.run_id)
    assert not (tmp_path / "other/outputs/base/model.pt").exists()


def test_what_a_stage_removes_on_a_worker_is_removed_on_the_driver_too(tmp_path, tracking):
    """Removals of files the workspace never had (the stage's old checkpoint, a dropped seed's folder) reach the
    driver: a local run leaves no stale model, so a Dask run must not either."""
    import shutil

    import mlflow

    from flows.removals import recording
    from flows.workspace import apply, snapshot, upload

    ws, driver = tmp_path / "ws", tmp_path / "driver"
    for root in (ws, driver):
        (root / "outputs/unlearn/m").mkdir(parents=True)
        (root / "outputs/unlearn/m/record.json").write_text("{}")
        (root / "outputs/seeds/m/seed-5").mkdir(parents=True)
        (root / "outputs/seeds/m/seed-5/record.json").write_text("{}")
        (root / "outputs/seeds/m/seed-1").mkdir(parents=True)
        (root / "outputs/seeds/m/seed-1/record.json").write_text("{}")
    for rel in ("outputs/unlearn/m/model.pt", "outputs/seeds/m/seed-5/model.pt", "outputs/seeds/m/seed-1/model.pt",
                "outputs/keep.pt"):
        (driver / rel).write_bytes(b"old weights")  # checkpoints stay on the driver: none travelled
    before = snapshot(ws)
    with recording(ws) as deleted:
        (ws / "outputs/unlearn/m/model.pt").unlink(missing_ok=True)  # the stage's own checkpoint: not here
        (ws / "outputs/unlearn/m/record.json").write_text('{"skipped": true}')
        shutil.rmtree(ws / "outputs/seeds/m")  # a folder removed and written again in part
        (ws / "outputs/seeds/m/seed-1").mkdir(parents=True)
        (ws / "outputs/seeds/m/seed-1/record.json").write_text("{}")
        (tmp_path / "elsewhere.txt").write_text("x")
        (tmp_path / "elsewhere.txt").unlink()  # outside the workspace's outputs: not its business
    assert sorted(deleted)[0] == "outputs/seeds/m" and "outputs/unlearn/m/model.pt" in deleted
    assert not any("elsewhere" in d for d in deleted)
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("removals"))
    bundle = upload(ws, before, run.info.run_id, "unlearn/abc", deleted)
    assert "outputs/seeds/m" in bundle.removed and bundle.kept == ["outputs/seeds/m/seed-1/record.json"]
    apply(driver, bundle, run.info.run_id)
    left = sorted(p.relative_to(driver).as_posix() for p in driver.rglob("*") if p.is_file())
    assert left == ["outputs/keep.pt", "outputs/seeds/m/seed-1/record.json", "outputs/unlearn/m/record.json"]
    assert (driver / "outputs/unlearn/m/record.json").read_text() == '{"skipped": true}'


def test_a_set_run_that_changes_the_split_is_refused_before_any_task(versioned):
    """Workers pull the version dvc.lock records; a --set run records nothing, so it may only reuse that one."""
    from flows.context import StageContext
    from flows.remote import check_recorded_data
    from flows.settings import load
    from flows.version_data import version_data

    root, _ = versioned
    check_recorded_data(root, record=False)  # unchanged: the recorded version is this run's
    version_data(StageContext(root, load(root, overrides=["request.classes=[4]"])))
    with pytest.raises(RuntimeError, match="change the data version or the split"):
        check_recorded_data(root, record=False)
    check_recorded_data(root, record=True)  # a recorded run commits its version first: nothing to refuse


def test_a_lost_attempts_run_is_closed_when_the_pipeline_run_ends(tracking):
    import mlflow

    from flows.recovery import close_lost_attempts

    client = mlflow.MlflowClient()
    exp = client.create_experiment("lost-attempts")
    parent = client.create_run(exp).info.run_id
    child = {"mlflow.parentRunId": parent, "worker": "worker-1"}
    lost = client.create_run(exp, tags=child).info.run_id  # its worker died: never terminated
    done = client.create_run(exp, tags={**child, "worker": "worker-2"}).info.run_id
    client.set_terminated(done, "FINISHED")
    other = client.create_run(exp).info.run_id  # not this pipeline run's: left alone
    messages = []
    assert close_lost_attempts(parent, messages.append) == 1 and len(messages) == 1
    closed = client.get_run(lost)
    assert closed.info.status == "KILLED" and "worker-1" in closed.data.tags["unlearn.closed"]
    assert client.get_run(done).info.status == "FINISHED" and client.get_run(other).info.status == "RUNNING"
    assert close_lost_attempts(parent, messages.append) == 0 and len(messages) == 1
