"""The pipeline on the local stack (`python -m flows.stack up`): PostgreSQL-backed MLflow server, Prefect server,
Dask scheduler and two workers in empty folders of their own, a DVC remote. `unlearn run` (task_runner: dask)
on digits with four methods and two unlearning seeds; while a model stage runs on worker-1, worker-1 is killed
(SIGKILL of its process group). The run must still end well: every stage done (the lost one on worker-2),
the registry's aliases pointing at versions whose checksums match the records, `dvc status` clean.
Run with `.venv/bin/python -m pytest -m scale tests/scale/test_stack_pipeline.py` (about 5-8 minutes here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from flows.settings import QUIET_ENV

pytestmark = pytest.mark.scale
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "flows"))
from flowtest_utils import TINY, make_project  # noqa: E402

METHODS = ["finetune", "neggrad", "random_label", "ssd"]
MODEL_STAGES = ("train_base", "retrain_oracle", "unlearn", "unlearn_seed", "evaluate")


def _clean_env() -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "UNLEARN_DASK_ADDRESS", "UNLEARN_DVC_REMOTE", "PREFECT_API_URL")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **QUIET_ENV,
            "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "true"}


@pytest.fixture(scope="module")
def stack_project():
    """A tiny project in a folder the `postgres` user can enter, with the stack up in it; down afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="unlearn-stackrun-", dir="/tmp"))
    folder.chmod(0o755)
    root = make_project(folder / "project", {**TINY, ("unlearn", "methods"): METHODS,
                                             ("evaluate", "more_seeds"): [1],
                                             ("orchestration", "task_runner"): "dask",
                                             ("orchestration", "workers"): 2})
    root.chmod(0o755)
    up = subprocess.run([sys.executable, "-m", "flows.stack", "up", "--dir", str(root)], cwd=REPO,
                        env=_clean_env(), capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = dict(line.split("=", 1) for line in (root / ".stack" / "env").read_text().splitlines() if "=" in line)
        yield root, env
    finally:
        subprocess.run([sys.executable, "-m", "flows.stack", "down", "--dir", str(root)], cwd=REPO,
                       env=_clean_env(), capture_output=True, text=True, timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


def _worker(root: Path, name: str) -> dict:
    state = json.loads((root / ".stack" / "state.json").read_text())
    return next(p for p in state["procs"] if p["name"] == name)


def _kill_worker_1_mid_stage(client, root: Path, run: subprocess.Popen, timeout: float = 600) -> str:
    """SIGKILL worker-1 once a stage has finished and worker-1 is running another; returns that task's key."""
    address = next(a for a, w in client.scheduler_info()["workers"].items() if w.get("name") == "worker-1")
    deadline = time.monotonic() + timeout
    finished_any = False
    while time.monotonic() < deadline and run.poll() is None:
        processing = client.processing()
        finished_any = finished_any or any(v for a, v in client.has_what().items())
        if finished_any and processing.get(address):
            key = str(processing[address][0])
            os.killpg(_worker(root, "worker-1")["pid"], signal.SIGKILL)
            return key
        time.sleep(0.2)
    raise AssertionError("worker-1 never ran a task after a first stage finished")


def test_killing_a_worker_mid_run_ends_in_a_clean_retry_on_the_other(stack_project):
    import mlflow
    from distributed import Client

    root, stack_env = stack_project
    env = {**_clean_env(), **stack_env}
    unlearn = Path(sys.executable).with_name("unlearn")
    t0 = time.monotonic()
    run = subprocess.Popen([str(unlearn), "run"], cwd=root, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    with Client(stack_env["UNLEARN_DASK_ADDRESS"], timeout=30) as client:
        killed = _kill_worker_1_mid_stage(client, root, run)
        out, _ = run.communicate(timeout=1200)
        survivors = {w.get("name") for w in client.scheduler_info()["workers"].values()}
    print(f"\nkilled worker-1 while it ran {killed}; run took {time.monotonic() - t0:.0f} s")
    assert run.returncode == 0, out[-4000:]
    assert survivors == {"worker-2"}

    client = mlflow.MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("unlearning")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_stage = {}
    for r in runs:
        stage, worker = r.data.tags.get("pipeline.stage"), r.data.tags.get("worker")
        if stage in MODEL_STAGES and r.info.status == "FINISHED":
            by_stage.setdefault(worker, []).append(stage)
    assert by_stage.get("worker-2"), by_stage  # the survivor ran the rest, the lost stage included
    assert not any(w == "driver" for w in by_stage), by_stage  # model stages never ran on the driver

    promote = json.loads((root / "outputs" / "promote.json").read_text())
    name = promote["registered_model"]
    for method in METHODS:
        record = json.loads((root / "outputs" / "unlearn" / method / "record.json").read_text())
        alias = client.get_model_version_by_alias(name, f"candidate-{method}")
        assert alias.version == str(record["version"]), (method, alias.version, record["version"])
        checkpoint = (root / "outputs" / "unlearn" / method / "model.pt").read_bytes()
        assert alias.tags.get("checkpoint_sha256") == hashlib.sha256(checkpoint).hexdigest(), method
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
