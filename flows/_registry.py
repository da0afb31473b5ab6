"""MLflow model logging, registration, aliases and content-addressed lookup.

Models are logged as MLflow 3 LoggedModels (`models:/m-<id>`) holding our own checkpoint
(`artifacts/model.pt`) plus a small pyfunc wrapper (`flows/_pyfunc.py`, "model from code": no pickled
code); versions are registered from that `models:/m-...` URI, never from `runs:/` (STACK.md). The
registry's lifecycle is aliases and version tags, not the deprecated stages.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from .settings import CHECKPOINT

PYFUNC_CODE = Path(__file__).with_name("_pyfunc.py")
KEY_TAG = "unlearn.key"
REUSED_TAG = "unlearn.reused"
_log_lock = threading.Lock()


def client():
    import mlflow

    return mlflow.MlflowClient()


def _pip_requirements() -> list[str]:
    # Given explicitly: inferring them costs about 5 s per log_model call (STACK.md).
    out = []
    for dist in ("torch", "numpy", "scikit-learn", "pydantic", "pyyaml"):
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def log_model(checkpoint: Path, name: str = "model") -> tuple[str, str]:
    """Log a checkpoint as a LoggedModel of the active run; returns (model_id, `models:/m-...` URI)."""
    import mlflow

    # MLflow warns on every pyfunc without `predict` type hints and puts a `once` filter in front of any
    # of ours; our inputs are plain arrays. Record the warnings of the call, drop that one, re-issue the
    # rest. catch_warnings swaps process-wide state, so calls are serialised (about 0.15 s each).
    with _log_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE),
                                       artifacts={"checkpoint": str(checkpoint)},
                                       pip_requirements=_pip_requirements())
    for w in caught:
        if "Add type hints to the `predict` method" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return info.model_id, info.model_uri


def register(registered_name: str, model_uri: str, tags: dict[str, Any]) -> str:
    """Register `model_uri` as a new version with `tags`; returns the version number."""
    import mlflow

    c = client()
    try:
        c.get_registered_model(registered_name)
    except mlflow.exceptions.MlflowException:
        try:
            c.create_registered_model(registered_name, description="Unlearning pipeline: base models, retrain "
                                      "oracles and unlearned models of this dataset and architecture. Aliases: "
                                      "production, previous, candidate-<method>, staging-<method>.")
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile by another task
    mv = c.create_model_version(registered_name, model_uri, run_id=tags.get("run_id"),
                                tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)


def fetch_checkpoint(model_uri: str, dest: Path) -> Path:
    """Copy the checkpoint of a logged or registered model (`models:/...`) to `dest`."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = list(local.rglob(CHECKPOINT))
        if not found:
            raise FileNotFoundError(f"{model_uri}: no {CHECKPOINT} among its artifacts")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], dest)
    return dest


def find_by_key(experiment_id: str, key: str):
    """The newest finished run that trained (not reused) a model with content key `key`, or None."""
    import mlflow

    runs = client().search_runs([experiment_id], filter_string=(
        f"tags.`{KEY_TAG}` = '{key}' and tags.`{REUSED_TAG}` = 'false' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=5)
    for run in runs:
        uri = run.data.tags.get("model_uri")
        if not uri:
            continue
        try:
            mlflow.MlflowClient().get_logged_model(uri.removeprefix("models:/"))
        except mlflow.exceptions.MlflowException:
            continue
        return run
    return None


def alias_version(registered_name: str, alias: str) -> str | None:
    """The version holding `alias`, or None (no such model or alias)."""
    import mlflow

    try:
        return str(client().get_model_version_by_alias(registered_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def version_exists(registered_name: str, version: str | None) -> bool:
    import mlflow

    if not version:
        return False
    try:
        client().get_model_version(registered_name, str(version))
        return True
    except mlflow.exceptions.MlflowException:
        return False


def version_tags(registered_name: str, version: str) -> dict[str, str]:
    return dict(client().get_model_version(registered_name, str(version)).tags)


def set_tags(registered_name: str, version: str, tags: dict[str, Any]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(registered_name, str(version), k, str(v))


def set_alias(registered_name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(registered_name, alias, str(version))


def delete_alias(registered_name: str, alias: str) -> None:
    import mlflow

    try:
        client().delete_registered_model_alias(registered_name, alias)
    except mlflow.exceptions.MlflowException:
        pass


def history(registered_name: str) -> list[str]:
    """Versions that held `production`, oldest first (a registered-model tag; rollback pops it)."""
    import mlflow

    try:
        raw = client().get_registered_model(registered_name).tags.get("production_history", "")
    except mlflow.exceptions.MlflowException:
        return []
    return [v for v in raw.split(",") if v]


def set_history(registered_name: str, versions: list[str]) -> None:
    client().set_registered_model_tag(registered_name, "production_history", ",".join(versions[-50:]))


def delete_tag(registered_name: str, version: str, key: str) -> None:
    import mlflow

    try:
        client().delete_model_version_tag(registered_name, str(version), key)
    except mlflow.exceptions.MlflowException:
        pass
