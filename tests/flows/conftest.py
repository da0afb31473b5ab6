"""Fixtures for the pipeline tests: quiet offline settings, one Prefect test harness per session, and
temporary copies of the project (a DVC + git repo) with tiny budgets and their own sqlite MLflow store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from flowtest_utils import new_store

# Set before prefect / mlflow are imported by any test (they read settings at import).
os.environ.pop("PREFECT_API_URL", None)  # a stale URL fails every flow after ~7 s (STACK.md)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ["UNLEARN_PYTHON"] = sys.executable  # DVC stage commands use this interpreter (flows/py)


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory):
    """A private PREFECT_HOME: no state shared with the developer's own Prefect."""
    home = tmp_path_factory.mktemp("prefect_home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("PREFECT_HOME", None)
    else:
        os.environ["PREFECT_HOME"] = old


@pytest.fixture(scope="session")
def prefect_harness(_prefect_home):
    """One Prefect test harness (temporary server) for the whole session: about 15 s, paid once."""
    from prefect.testing.utilities import prefect_test_harness  # 6 s import: only when needed

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: creating one costs about 8 s here, copying it nothing."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def tracking(tmp_path, monkeypatch, mlflow_template):
    """A private sqlite MLflow store for one test (MLFLOW_TRACKING_URI points at it)."""
    uri = new_store(mlflow_template, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def registry(tmp_path, tracking):
    """A project folder with data, a split, and a registered model with 3 versions (one logged model):
    (base, unlearned, unlearned), service namespace, no deletion request yet."""
    import mlflow
    import torch

    from flows import _registry as R
    from flows.context import StageContext
    from flows.datastore import materialise
    from flows.tracking import setup_mlflow
    from flows.version_data import version_data
    from unlearning.datasets import load_dataset
    from unlearning.models import create_model, save_checkpoint
    from unlearning.params import parse_params

    params = parse_params({"unlearn": {"methods": ["finetune", "neggrad"], "finetune": {}, "neggrad": {}}})
    (tmp_path / "params.yaml").write_text("{}\n")  # a project folder for the CLI (`--root`): the defaults
    materialise(tmp_path, load_dataset("digits"), {"pending": [], "done": []})
    version_data(StageContext(tmp_path, params))
    setup_mlflow(tmp_path, params)
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("mlp", 10, (1, 8, 8), width=8), tmp_path / "model.pt")
    with mlflow.start_run():
        _, uri = R.log_model(ckpt, tmp_path, "base")
    versions = [R.register("digits-mlp", uri, {"role": r}) for r in ("base", "unlearned", "unlearned")]
    return tmp_path, params, versions


# The Dask `scale` tests' stores and cluster (tests/flows/dask_utils.py says what each part does); module-scoped,
# so each test module gets fresh servers and workers whose audit hooks watch its own driver folder.
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """`mlflow server` on sqlite and a local-path DVC remote: `{"tracking_uri", "dvc_remote"}`."""
    from dask_utils import servers

    with servers(tmp_path_factory.mktemp("stores")) as found:
        yield found


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return tmp_path_factory.mktemp("driver")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, driver_root):
    """(client, workers folder) of a LocalCluster: two worker processes in empty folders, auditing `driver_root`."""
    from dask_utils import WorkerFolders
    from distributed import Client, LocalCluster

    workers = tmp_path_factory.mktemp("workers")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as lc, \
            Client(lc) as client:
        client.register_plugin(WorkerFolders(str(workers), str(driver_root.resolve())))
        yield client, workers
