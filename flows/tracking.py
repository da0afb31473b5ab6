"""MLflow for the stages: the store and experiment, one run per stage, run tags, flat params.

Thread-safe: MLflow keeps the active run per thread, and Prefect runs each task in its own thread.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import device_name, mask_credentials, registered_model_name, tracking_uri
from .sqlite_store import first_touch


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested params -> `{"train.lr": "0.001", ...}` (MLflow params are strings; a password in a URI such
    as `tracking.uri` is masked: params are shown to everyone who can read the experiment)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = mask_credentials(json.dumps(obj) if isinstance(obj, list | tuple) else str(obj))
    return out


_setup_lock = threading.Lock()
_experiments: dict[tuple[str, str], str] = {}


# MLflow 3's UI opens an experiment without this tag as a GenAI one (runs shown as "Evaluation runs",
# models as "Agent versions"); "custom_model_development" is the UI's value for model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def create_experiment(client: Any, uri: str, name: str) -> str:
    """Create experiment `name` (artifacts beside a sqlite store, in `mlartifacts/`, a model-training
    experiment for the UI); its id, also when another process created it meanwhile."""
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # noqa: BLE001 - created meanwhile by another process (or clone)
        return client.get_experiment_by_name(name).experiment_id


def mark_model_training(client: Any, experiment: Any) -> None:
    """Give an experiment made before the kind was set (or by hand) the model-training kind; a kind
    someone chose is kept."""
    if not experiment.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


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
        if exp is not None:
            mark_model_training(client, exp)
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
    """HEAD commit of the project (with `-dirty` when the work tree has changes), or `unknown`.

    On a Dask worker (no checkout) it is the driver's, which the task sets in `UNLEARN_GIT_COMMIT`.
    """
    if os.environ.get("UNLEARN_GIT_COMMIT"):
        return os.environ["UNLEARN_GIT_COMMIT"]
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
    """The run of a stage; `run_id` is None for a reused stage, which makes no run (see `stage_run`):
    then the `log_*` / `set_tags` calls do nothing."""

    run_id: str | None
    experiment_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._batch(params=params)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._batch(metrics=metrics)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._batch(tags=tags)

    def _batch(self, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
               tags: Mapping[str, Any] | None = None) -> None:
        if self.run_id is None:
            return
        import mlflow
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        items = [Param(k, str(v)) for k, v in (params or {}).items()]
        client = mlflow.MlflowClient()
        for i in range(0, max(len(items), 1), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=items[i:i + 100],
                             metrics=[] if i else [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                             tags=[] if i else [RunTag(k, str(v)) for k, v in (tags or {}).items()])


# The stages that read the data version, and the MLflow input context they read it in.
DATA_CONTEXT = {"train_base": "training", "retrain_oracle": "training", "unlearn": "unlearning",
                "evaluate": "evaluation", "calibrate": "calibration"}


def log_data_input(root: Path, params: Any, data_hash: str, context: str) -> None:
    """The data version as the active run's input dataset (MLflow's Datasets column): name, digest = the
    data hash (`flows.datastore.content_hash`), source = the `data/` folder it was read from."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from .settings import DATA_DIR

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": two local sources are registered
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str((root / DATA_DIR).resolve()))
    mlflow.log_input(MetaDataset(source, name=params.data.name, digest=data_hash), context=context)


_reused_lock = threading.Lock()
_reused: dict[str, list[str]] = {}  # parent run -> the stages it reused, in order


def note_reused(parent_run_id: str | None, stage: str) -> None:
    """List a reused stage on the parent run (tag `reused_stages`, metric `pipeline/reused_stages`) instead
    of giving it a run of its own: an unchanged rerun then adds a parent run, not one run per stage."""
    if parent_run_id is None:  # `dvc repro` of one stage: its StageRun file says it was reused
        return
    import mlflow

    with _reused_lock:  # the evaluate tasks run in parallel threads
        stages = _reused.setdefault(parent_run_id, [])
        stages.append(stage)
        client = mlflow.MlflowClient()
        client.set_tag(parent_run_id, "reused_stages", "; ".join(stages)[:7900])
        client.log_metric(parent_run_id, "pipeline/reused_stages", float(len(stages)))


@contextmanager
def stage_run(root: Path, params: Any, stage: str, *, run_name: str, parent_run_id: str | None,
              tags: Mapping[str, str] | None = None, reused: bool = False) -> Iterator[RunInfo]:
    """One MLflow run for one stage, nested under the pipeline's parent run when there is one.

    Tagged with its owner (`owner_tags`), so the next run can tell it was left RUNNING by a
    dead process (`flows.recovery`). A stage that reads the data version logs it as its input dataset.
    Tagged with where it ran (`worker`: the Dask worker's name or `driver`, `worker.host`, `worker.device`).
    A `reused` stage (outputs kept, nothing computed) makes no run: it is listed on the parent run
    (`note_reused`) and yields a `RunInfo` without a run id.
    """
    import mlflow

    exp_id = setup_mlflow(root, params)
    if reused:
        made_by = (tags or {}).get("reused_from")
        note_reused(parent_run_id, run_name + (f" from run {made_by}" if made_by else ""))
        yield RunInfo(None, exp_id)
        return
    from .runner import worker_tags

    device = device_name(params)
    base_tags = {"pipeline.stage": stage, "launcher": os.environ.get("UNLEARN_LAUNCHER", "dvc"),
                 "git_commit": git_commit(root), "device": device, **worker_tags(device),
                 **owner_tags(registered_model_name(params))}
    base_tags.update(tags or {})
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id,
                          tags=base_tags) as run:
        if stage in DATA_CONTEXT and base_tags.get("data_hash"):
            log_data_input(root, params, base_tags["data_hash"], DATA_CONTEXT[stage])
        yield RunInfo(run.info.run_id, exp_id)


def method_params(method: str, cfg: Any, split: Any, seed: int) -> dict[str, str]:
    """`method` and its effective hyperparameters (`<method>.<key>`) as MLflow params, so a comparison
    can label and colour runs by method: the values a run on `split` with `seed` uses, not the `None`s of
    settings chosen at run time (`MethodConfig.effective`)."""
    return {"method": method, **flatten(cfg.effective(split, seed), f"{method}.")}


SUMMARY_METRICS = ("forget/acc", "retain/acc", "test/acc")


def log_parent_summary(root: Path, params: Any, parent_run_id: str, decision: Any) -> None:
    """A few numbers on the pipeline's parent run, so its metric columns say what the run found: how many
    methods ran / passed their gates / were skipped, and forget, retain and test accuracy of the best
    passing method (tag `best_method`), of the original model and of the oracle."""
    from .records import read_json
    from .settings import metrics_file

    methods = list(params.unlearn.methods)
    values = {"methods/total": len(methods), "methods/passed": len(decision.passing),
              "methods/skipped": len(decision.skipped)}
    best = decision.passing[0] if decision.passing else None
    for prefix, name in (("best", best), ("original", "base"), ("oracle", "oracle")):
        path = metrics_file(root, name) if name else None
        found = read_json(path) if path is not None and path.exists() else {}
        values.update({f"{prefix}/{k}": found[k] for k in SUMMARY_METRICS if isinstance(found.get(k), int | float)})
    RunInfo(parent_run_id, "")._batch(metrics=values, tags={"best_method": best or "none"})
