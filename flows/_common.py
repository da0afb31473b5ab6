"""Glue shared by every stage: environment, params, paths, MLflow set-up, run tags, progress, JSON.

Nothing here runs at import time: entry points call `quiet_env()` first (STYLE rule 5), and mlflow,
prefect and dvc are imported inside the functions that need them, so `python -m flows.<stage>` and
`unlearn --help` stay fast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Measured on the 2-core machine (STACK.md): the temporary Prefect server needs more than its default 20 s
# to start; analytics off, or every start logs an ERROR about telemetry on an offline machine.
QUIET_ENV = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # log_model would copy uv.lock + pyproject.toml (0.5 MB) into every model: we pass pip_requirements.
    "MLFLOW_LOG_UV_FILES": "false",
    "MLFLOW_UV_AUTO_DETECT": "false",
}

# Workspace layout (relative to the project root). DVC stage outs in dvc.yaml use the same paths.
DATA_DIR = "data"
SPLIT_FILE = "outputs/version_data/split.json"
METRICS_DIR = "outputs/metrics"
PLOTS_DIR = "outputs/plots"
PROMOTE_FILE = "outputs/promote.json"
RUN_FILE = "run.json"  # unlearn / evaluate outputs: the run that produced them, model URI, version
# Base and oracle outputs keep only what is stable when the model is reused (URI, version, key, training
# time): a reused model then leaves its DVC outs byte-identical and nothing downstream re-runs. What this
# pipeline run did (its run id, "reused") goes to outputs/runs/<role>.json, which DVC does not track.
MODEL_FILE = "model.json"
RUNS_DIR = "outputs/runs"
CHECKPOINT = "model.pt"


def quiet_env() -> None:
    """Offline-safe, quiet settings for Prefect, DVC and MLflow (kept when the user set them)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import logging

    for name in ("alembic", "dvc", "httpx", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)


def dvc_stage_env() -> None:
    """Entry of a DVC stage command (`python -m flows.<stage>`): quiet settings, runs tagged launcher=dvc."""
    quiet_env()
    os.environ["UNLEARN_LAUNCHER"] = "dvc"


def stage_dir(root: Path, stage: str, method: str | None = None) -> Path:
    """Output folder of a model-producing stage: outputs/base, outputs/oracle, outputs/unlearn/<m>, ..."""
    if stage in ("base", "oracle"):
        return root / "outputs" / stage
    if stage in ("unlearn", "evaluate"):
        return root / "outputs" / stage / str(method)
    raise ValueError(f"'stage' must be one of ['base', 'oracle', 'unlearn', 'evaluate']; got {stage!r}")


def metrics_file(root: Path, name: str) -> Path:
    """DVC metrics JSON of `name` (base, oracle or a method)."""
    return root / METRICS_DIR / f"{name}.json"


# --------------------------------------------------------------------------- params

def load(root: Path, params_path: str | Path | None = "params.yaml", overrides: list[str] | None = None):
    """params.yaml (relative to `root`) with `section.key=value` overrides -> typed `Params`."""
    from unlearning.config import load_params

    path = Path(params_path) if params_path is not None else None
    if path is not None and not path.is_absolute():
        path = root / path
    if path is not None and not path.exists() and str(params_path) == "params.yaml":
        path = None  # built-in defaults where the project has no params.yaml
    return load_params(path, overrides or [])


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested params -> `{"train.lr": "0.001", ...}` (MLflow params are strings)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = json.dumps(obj) if isinstance(obj, list | tuple) else str(obj)
    return out


def registered_model_name(params) -> str:
    """One registered model per dataset and architecture, e.g. `digits-mlp`."""
    return f"{params.data.name}-{params.model.name}"


# --------------------------------------------------------------------------- files

def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically, keys sorted (stable bytes: DVC hashes these files); nan -> null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- MLflow

_setup_lock = threading.Lock()
_experiments: dict[tuple[str, str], str] = {}


def tracking_uri(root: Path, params) -> str:
    """`MLFLOW_TRACKING_URI`, else `tracking.uri`; a relative sqlite path is taken relative to the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((root / uri[len(prefix):]).resolve())
    return uri


def setup_mlflow(root: Path, params) -> str:
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
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(params.tracking.experiment)
        if exp is None:
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
            try:
                exp_id = client.create_experiment(params.tracking.experiment, artifact_location=location)
            except Exception:  # created meanwhile by another process
                exp_id = client.get_experiment_by_name(params.tracking.experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        _experiments[key] = exp_id
        return exp_id


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


def device_name(params) -> str:
    from unlearning.utils import get_device

    return str(get_device(params.train.device))


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str


@contextmanager
def stage_run(root: Path, params, stage: str, *, run_name: str, parent_run_id: str | None,
              tags: Mapping[str, str] | None = None) -> Iterator[RunInfo]:
    """One MLflow run for one stage, nested under the pipeline's parent run when there is one.

    Thread-safe: MLflow keeps the active run per thread, and Prefect runs each task in its own thread.
    """
    import mlflow

    exp_id = setup_mlflow(root, params)
    base_tags = {"pipeline.stage": stage, "launcher": os.environ.get("UNLEARN_LAUNCHER", "dvc"),
                 "git_commit": git_commit(root), "device": device_name(params)}
    base_tags.update(tags or {})
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id,
                          tags=base_tags) as run:
        yield RunInfo(run.info.run_id, exp_id)


# --------------------------------------------------------------------------- progress

class Progress:
    """Progress of long stages on stderr: one line per event, epochs throttled to about one line per 2 s."""

    _lock = threading.Lock()
    _t0 = time.perf_counter()  # one clock for every stage of the process

    def __init__(self, label: str, stream=None, every_s: float = 2.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last = -1e9

    def say(self, message: str) -> None:
        with self._lock:
            self.stream.write(f"[{time.perf_counter() - self._t0:6.1f}s] {self.label}: {message}\n")
            self.stream.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        if "epoch" in event:
            now = time.perf_counter()
            last = event["epoch"] == event.get("epochs")
            if not last and now - self._last < self.every_s:
                return
            self._last = now
            self.say(f"{event.get('stage', '')} epoch {event['epoch']}/{event.get('epochs', '?')}"
                     f" loss {event.get('loss', float('nan')):.4f}")
        else:
            detail = ", ".join(f"{k}={v}" for k, v in event.items() if k != "stage")
            self.say(f"{event.get('stage', '')} {detail}".strip())
