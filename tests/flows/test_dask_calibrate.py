"""`unlearn calibrate` on two Dask workers that cannot see the driver's folder (`scale`: not in the default suite).

Two methods, 3 trials each, searched at once, one task per method (`flows.calibrate_remote`), against an
`mlflow server` and a local-path DVC remote; each worker in an empty folder with an audit hook on the
driver's project (fixtures `stores`, `driver_root`, `cluster`: tests/flows/conftest.py). The same
calibration on threads (another project, same seeds) must find the same trials.
Run: `.venv/bin/python -m pytest -m scale tests/flows/test_dask_calibrate.py` (about 2 minutes here).
"""

from __future__ import annotations

import os

import pytest
from flowtest_utils import TINY, make_project, new_store

pytestmark = pytest.mark.scale

METHODS = ["finetune", "neggrad"]
TRIALS = 3


def _tiny(**orchestration):
    return {**TINY, ("unlearn", "methods"): METHODS, ("calibration", "trials"): TRIALS,
            ("calibration", "budget_s"): 900.0, **{("orchestration", k): v for k, v in orchestration.items()}}


def _calibrate(root, uri):
    """version_data (recorded in dvc.lock: workers pull that version), then the calibrate flow."""
    from flows import _dvc
    from flows.calibrate_flow import unlearning_calibrate
    from flows.context import StageContext
    from flows.settings import load
    from flows.stages import run_stage

    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        run_stage(StageContext(root, load(root)), "version_data")
        _dvc.commit(root, ["version_data"])
        return unlearning_calibrate(root=str(root), methods=METHODS)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


@pytest.fixture(scope="module")
def dask_run(driver_root, stores, cluster, prefect_harness):
    client, _ = cluster
    root = make_project(driver_root / "project", _tiny(task_runner="dask", address=client.scheduler.address,
                                                        dvc_remote=stores["dvc_remote"]))
    return root, _calibrate(root, stores["tracking_uri"])


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory, mlflow_template, dask_run, prefect_harness):
    root = make_project(tmp_path_factory.mktemp("threads") / "project", _tiny())
    return root, _calibrate(root, new_store(mlflow_template, root))


def _trials(uri, run_id):
    """method -> [(trial, state, its setting, gap to 3 decimals)] from the trial runs; and their workers."""
    import mlflow

    c = mlflow.MlflowClient(uri)
    parent = c.get_run(run_id)
    runs = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    trials: dict[str, list] = {}
    for r in runs:
        setting = tuple(sorted((k, v) for k, v in r.data.params.items() if k != "method"))
        gap = r.data.metrics.get("gap")
        trials.setdefault(r.data.tags["method"], []).append(
            (int(r.data.tags["trial"]), r.data.tags["state"], setting, None if gap is None else round(gap, 3)))
    return {m: sorted(t) for m, t in trials.items()}, [r.data.tags.get("worker") for r in runs]


def test_each_method_searched_on_a_worker_and_nothing_read_the_driver_folder(dask_run, stores, cluster):
    from dask_utils import seen, worker_folder_listing

    client, folders = cluster
    root, out = dask_run
    trials, workers = _trials(stores["tracking_uri"], out["run_id"])
    assert sorted(trials) == METHODS and all(len(t) == TRIALS for t in trials.values()), trials
    names = {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    assert set(workers) == names, workers  # two searches at once: one on each worker, none on the driver
    assert (root / out["profile"]).is_file() and set(out["heldout"]) == set(METHODS)
    audits = seen(folders)
    assert set(audits) == names and all(not hits for hits in audits.values()), audits
    for files in client.run(worker_folder_listing).values():  # kept: the pulled data and the proxy models
        assert files and all(f.startswith(("unlearn/dvc-cache/", "unlearn/calibration-models/")) for f in files)
        assert any(f.startswith("unlearn/calibration-models/") for f in files), files


def test_the_same_trials_as_on_threads(dask_run, threads_run, stores):
    """Seeded TPE on deterministic proxies: the same settings and gaps trial by trial, the same held-out gaps."""
    got, _ = _trials(stores["tracking_uri"], dask_run[1]["run_id"])
    want, _ = _trials(f"sqlite:///{threads_run[0] / 'mlflow.db'}", threads_run[1]["run_id"])
    assert got == want
    for m in METHODS:
        a, b = dask_run[1]["heldout"][m], threads_run[1]["heldout"][m]
        assert {k: _r(v) for k, v in a.items()} == {k: _r(v) for k, v in b.items()}, m
    assert dask_run[1]["key"] == threads_run[1]["key"]  # the same profile key: runs on either find it


def _r(value):
    return None if value is None else round(value, 3)
