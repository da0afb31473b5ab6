"""The pipeline on two Dask workers that cannot see the driver's folder (`scale`: not in the default suite).

`mlflow server` on a sqlite file, a local-path DVC remote, and a `distributed.LocalCluster` of two worker
processes, each moved into an empty folder of its own with an audit hook on the driver's project folder
(fixtures `stores`, `driver_root`, `cluster`: tests/flows/conftest.py). The same project then runs with
`task_runner: threads` against a store of its own, and both must agree.
Run: `.venv/bin/python -m pytest -m scale tests/flows/test_dask_scale.py`.
"""

from __future__ import annotations

import os

import pytest
from flowtest_utils import dvc, make_project, new_store

pytestmark = pytest.mark.scale

METHODS = ["finetune", "neggrad"]


def _env(key, value):
    old = os.environ.get(key)
    os.environ[key] = value
    return old


def _restore(key, old):
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old


@pytest.fixture(scope="module")
def dask_run(driver_root, stores, cluster, prefect_harness):
    from dask_utils import tiny

    from flows.pipeline import unlearning_pipeline

    client, _ = cluster
    root = make_project(driver_root / "project", tiny(METHODS, task_runner="dask", address=client.scheduler.address,
                                                       dvc_remote=stores["dvc_remote"]))
    old = _env("MLFLOW_TRACKING_URI", stores["tracking_uri"])
    try:
        out = unlearning_pipeline(root=str(root))
    finally:
        _restore("MLFLOW_TRACKING_URI", old)
    return root, out


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory, mlflow_template, dask_run):
    from dask_utils import tiny

    from flows.pipeline import unlearning_pipeline

    root = make_project(tmp_path_factory.mktemp("threads") / "project", tiny(METHODS))
    old = _env("MLFLOW_TRACKING_URI", new_store(mlflow_template, root))
    try:
        out = unlearning_pipeline(root=str(root))
    finally:
        _restore("MLFLOW_TRACKING_URI", old)
    return root, out


def test_both_workers_ran_model_stages_and_the_driver_the_rest(dask_run, stores, cluster):
    from dask_utils import check_stage_workers, children

    client, _ = cluster
    runs = children(stores["tracking_uri"], dask_run[1]["parent_run_id"])
    names = {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    check_stage_workers(runs, names)


def test_no_worker_read_the_driver_folder(dask_run, cluster):
    from dask_utils import seen, worker_folder_listing

    client, workers = cluster
    audits = seen(workers)
    assert set(audits) == {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert all(not hits for hits in audits.values()), audits
    for files in client.run(worker_folder_listing).values():  # only the DVC cache of the pulled data is kept
        assert files and all(f.startswith("unlearn/dvc-cache/") for f in files), files[:10]


def test_metrics_equal_a_threads_run(dask_run, threads_run):
    from dask_utils import check_same_metrics

    check_same_metrics(dask_run[0], threads_run[0], [*METHODS, "base", "oracle"])


def test_registry_aliases_and_dvc_status(dask_run, threads_run, stores):
    from dask_utils import check_registry

    root, out = dask_run
    check_registry(stores["tracking_uri"], out["promotion"].model_dump(), threads_run[1]["promotion"].model_dump(),
                   f"sqlite:///{threads_run[0] / 'mlflow.db'}", METHODS)
    status = dvc(root, "status")
    assert "up to date" in status.stdout, status.stdout


def test_the_audit_sees_a_read_of_the_driver_folder(dask_run, cluster):
    """The audit can fail: a worker that reads the driver's params.yaml is recorded."""
    from dask_utils import seen

    client, workers = cluster
    target = str(dask_run[0] / "params.yaml")
    client.run(lambda: open(target).close())  # noqa: SIM115 - the read the audit must see
    audits = seen(workers)
    assert len(audits) == 2 and all(any(target in hit for hit in hits) for hits in audits.values()), audits


def test_stage_times(dask_run, threads_run):
    """Per-stage wall times of both runs (printed with -s), and where a stage's time went on a worker."""
    dask_out, threads_out = dask_run[1], threads_run[1]
    assert set(dask_out["stages"]) == set(threads_out["stages"])
    print(f"\n{'stage':32} {'threads s':>10} {'dask s':>8}  on the worker / driver")
    for name, seconds in threads_out["stages"].items():
        parts = dask_out["timings"].get(name, {})
        print(f"{name:32} {seconds:10.1f} {dask_out['stages'][name]:8.1f}  "
              + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        if parts:  # what the worker and the driver measured lies within the driver's wall time for the stage
            assert 0 < sum(parts.values()) <= dask_out["stages"][name] + 0.05, (name, parts)
    print(f"{'flow body':32} {threads_out['seconds']:10.1f} {dask_out['seconds']:8.1f}")


def test_a_rerun_on_dask_reuses_everything_and_leaves_dvc_lock_alone(dask_run, stores, cluster, threads_run):
    """Content-key reuse and `dvc status` as in a local run: nothing new registered, dvc.lock unchanged."""
    import mlflow

    from flows.pipeline import unlearning_pipeline

    root, out = dask_run
    c = mlflow.MlflowClient(stores["tracking_uri"])
    name = out["promotion"].registered_model
    versions = len(c.search_model_versions(f"name = '{name}'"))
    lock = (root / "dvc.lock").read_text()
    old = _env("MLFLOW_TRACKING_URI", stores["tracking_uri"])
    try:
        again = unlearning_pipeline(root=str(root))
    finally:
        _restore("MLFLOW_TRACKING_URI", old)
    assert len(c.search_model_versions(f"name = '{name}'")) == versions
    assert (root / "dvc.lock").read_text() == lock
    assert not again["timings"].keys() & {f"evaluate[{m}]" for m in METHODS}  # kept by the driver: unchanged
    assert "up to date" in dvc(root, "status").stdout
