"""MLflow for the stages: the store and experiment, one run per stage, run tags, flat params.

Thread-safe: MLflow keeps the active run per thread, and Prefect runs each task in its own thread.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import device_name, registered_model_name, tracking_uri


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested params -> `{"train.lr": "0.001", ...}` (MLflow params are strings)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = json.dumps(obj) if isinstance(obj, list | tuple) else str(obj)
    return out


_setup_lock = threading.Lock()
_experiments: dict[tuple[str, str], str] = {}


@contextmanager
def first_touch(uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite store between processes (a flock on its folder).

    MLflow creates and migrates a new sqlite store on first use; two processes doing it at once (two
    clones sharing one new `mlflow.db`) made the second die in the migration (`duplicate column`).
    """
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        fd = os.open(Path(uri[len("sqlite:///"):]).parent, os.O_RDONLY)
    except OSError:  # no such folder: MLflow says so itself
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: go on unserialised, as before
            pass
        yield
    finally:
        os.close(fd)


def create_experiment(client: Any, uri: str, name: str) -> str:
    """Create experiment `name` (artifacts beside a sqlite store, in `mlartifacts/`); its id, also when another
    process created it meanwhile."""
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created meanwhile by another process (or clone)
        return client.get_experiment_by_name(name).experiment_id


def setup_mlflow(root: Path, params: Any) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id.

    A new experiment keeps its artifacts beside a sqlite store (`mlartifacts/` next to `mlflow.db`),
    whatever the current directory, so `mlflow ui --backend-store-uri sqlite:///mlflow.db` finds them.
    """
    import logging

    import mlflow

    # Harmless on every log_model call in a uv venv (pip's version unknown); set after `import mlflow`,
    # which configures its own loggers.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    uri = tracking_uri(root, params)
    key = (uri, params.tracking.experiment)
    with _setup_lock:
        mlflow.set_tracking_uri(uri)
        if key in _experiments:
            return _experiments[key]
        with first_touch(uri):
            client = mlflow.MlflowClient(uri)
            exp = client.get_experiment_by_name(params.tracking.experiment)
        exp_id = exp.experiment_id if exp is not None else create_experiment(client, uri, params.tracking.experiment)
        _experiments[key] = exp_id
        return exp_id


_leases: dict[str, str] = {}  # registered model -> the lease ticket this process holds (flows.locks)


def set_lease(model: str, ticket: str | None) -> None:
    """Record (or forget) the lease ticket this process holds on `model`; `flows.locks` calls it."""
    if ticket is None:
        _leases.pop(model, None)
    else:
        _leases[model] = ticket


def lease_id(model: str) -> str | None:
    """Our ticket on `model`'s lease (`<model>.lease/v<n>`) while this process holds it."""
    return _leases.get(model)


def owner_tags(model: str) -> dict[str, str]:
    """Tags that say which process created a run; `flows.recovery` tells dead runs by them."""
    tags = {"unlearn.owner.pid": str(os.getpid()), "unlearn.owner.host": socket.gethostname(),
            "unlearn.registered_model": model}
    if model in _leases:
        tags["unlearn.owner.lease"] = _leases[model]
    return tags


def git_commit(root: Path) -> str:
    """HEAD commit of the project (with `-dirty` when the work tree has changes), or `unknown`."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str


@contextmanager
def stage_run(root: Path, params: Any, stage: str, *, run_name: str, parent_run_id: str | None,
              tags: Mapping[str, str] | None = None) -> Iterator[RunInfo]:
    """One MLflow run for one stage, nested under the pipeline's parent run when there is one.

    Tagged with its owner (`owner_tags`), so the next run can tell it was left RUNNING by a
    dead process (`flows.recovery`).
    """
    import mlflow

    exp_id = setup_mlflow(root, params)
    base_tags = {"pipeline.stage": stage, "launcher": os.environ.get("UNLEARN_LAUNCHER", "dvc"),
                 "git_commit": git_commit(root), "device": device_name(params),
                 **owner_tags(registered_model_name(params))}
    base_tags.update(tags or {})
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id,
                          tags=base_tags) as run:
        yield RunInfo(run.info.run_id, exp_id)
