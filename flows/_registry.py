"""MLflow model logging, registration, aliases and content-addressed lookup.

Models are logged as MLflow 3 LoggedModels (`models:/m-<id>`) holding our own checkpoint
(`artifacts/model.pt`) plus a small pyfunc wrapper (`flows/_pyfunc.py`, "model from code": no pickled
code) that stands on its own (`flows/_standalone.py`); versions are registered from that `models:/m-...`
URI, never from `runs:/` (STACK.md), and listed on their logged model. The registry's lifecycle is aliases
and version tags, not the deprecated stages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .settings import CHECKPOINT

PYFUNC_CODE = Path(__file__).with_name("_pyfunc.py")
KEY_TAG = "unlearn.key"
REUSED_TAG = "unlearn.reused"
CHECKSUM_TAG = "checkpoint_sha256"  # SHA-256 of model.pt, computed when it was saved (record, run, version)
CORRUPT_TAG = "checkpoint_corrupt"  # set on a version whose stored checkpoint failed verification
_log_lock = threading.Lock()


def client():
    import mlflow

    return mlflow.MlflowClient()


def log_model(checkpoint: Path, root: Path, name: str) -> tuple[str, str]:
    """Log a checkpoint as the LoggedModel `name` of the active run; returns (model_id, `models:/m-...` URI).

    The model stands on its own (`flows/_standalone.py`): preprocessing constants from the data version under
    `root`, a signature and an input example of raw rows, the model definitions as code, minimal requirements.
    """
    import mlflow

    from . import _standalone

    # MLflow loads the new model once to check its input example (about 0.03 s), which puts the model's
    # code/ first on sys.path for good and imports the shipped package from there: one more sys.path entry
    # per call in a long-lived process. Undone after each call; calls are serialised so that one call's
    # undo never removes what another is loading.
    with _log_lock, tempfile.TemporaryDirectory() as tmp:
        path, modules = list(sys.path), set(sys.modules)
        try:
            info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE),
                                           **_standalone.log_model_kwargs(root, checkpoint, Path(tmp)))
        finally:
            sys.path[:] = path
            for module in set(sys.modules) - modules:
                if module.partition(".")[0] == _standalone.SHIPPED_PACKAGE:
                    del sys.modules[module]
    return info.model_id, info.model_uri


def register(registered_name: str, model_uri: str, tags: dict[str, Any]) -> str:
    """Register the logged model `model_uri` (`models:/m-...`) as a new version with `tags` (empty values
    left out); returns the version number.

    The version is linked to its LoggedModel both ways, as `mlflow.register_model` links them: the version
    records `model_id`, and the model's `mlflow.modelVersions` tag lists the version (what the MLflow UI
    shows as "Registered models"). Done here without `register_model`, which prints to stderr on every call
    and, against a tracking server (which links the model itself), would list the version twice.
    """
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
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = c.create_model_version(registered_name, model_uri, run_id=tags.get("run_id"), model_id=model_id,
                                tags={k: str(v) for k, v in tags.items() if v is not None and str(v) != ""})
    if model_id:
        _link(model_id, registered_name, str(mv.version))
    return str(mv.version)


def _link(model_id: str, registered_name: str, version: str) -> None:
    """List `registered_name` v`version` in the LoggedModel's `mlflow.modelVersions` tag (once)."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    c = client()
    listed = json.loads(c.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": registered_name, "version": version}
    if entry not in listed:
        c.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*listed, entry])})


class ChecksumError(ValueError):
    """A checkpoint whose bytes are not the ones saved (truncated, altered): the message is one line."""


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(path: Path, expected: str | None, what: str, hint: str = "") -> str:
    """The SHA-256 of checkpoint `path`, checked against `expected`; raises `ChecksumError` on a mismatch.

    A checkpoint saved before checksums were recorded (`expected` None) must at least load. `hint`, the
    way out, ends the message.
    """
    tail = f"; {hint}" if hint else ""
    if not Path(path).exists():
        raise ChecksumError(f"{what}: checkpoint missing ({path}){tail}")
    got = sha256_file(path)
    if expected and got != expected:
        raise ChecksumError(f"{what}: checkpoint sha256 mismatch (expected {expected[:12]}, got {got[:12]}){tail}")
    if not expected:
        import torch

        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any failure to read the archive means: not a usable checkpoint
            raise ChecksumError(f"{what}: checkpoint unreadable (no sha256 recorded; got {got[:12]}){tail}") from None
    return got


LOCAL_HINT = "`unlearn run` or `dvc repro` fetches it again"


def load_verified(path: Path, expected: str | None, what: str, device: Any = "cpu"):
    """`load_checkpoint(path)` after `verify_checkpoint`: every local read of a model.pt goes through here."""
    from unlearning.models import load_checkpoint

    verify_checkpoint(path, expected, what, LOCAL_HINT)
    return load_checkpoint(path, device)


def fetch_checkpoint(model_uri: str, dest: Path, expected: str | None = None, what: str | None = None) -> Path:
    """Copy the checkpoint of a logged or registered model (`models:/...`) to `dest`, verified first.

    Raises `ChecksumError` (and leaves `dest` alone) when the stored bytes do not match `expected`.
    """
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = list(local.rglob(CHECKPOINT))
        if not found:
            raise ChecksumError(f"{what or model_uri}: no {CHECKPOINT} among its artifacts")
        verify_checkpoint(found[0], expected, what or model_uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], dest)
    return dest


def versions_by_key(registered_name: str, key: str) -> list:
    """Versions of `registered_name` registered under content key `key`, newest first."""
    try:
        found = client().search_model_versions(f"name = '{registered_name}' and tags.`{KEY_TAG}` = '{key}'")
    except Exception:  # noqa: BLE001 - no registered model yet (or a store that cannot filter): nothing to reuse
        return []
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def reuse_by_key(registered_name: str, key: str, dest: Path, report: Callable[[str], None]):
    """The newest version with content key `key` whose checkpoint verifies, fetched to `dest`; else None.

    Looked up in the registry (not among finished runs), so a version registered by a run that was killed
    afterwards is reused, not registered again. A version whose stored checkpoint does not verify is
    reported in one line, tagged `checkpoint_corrupt`, and skipped: the caller trains again.
    """
    for mv in versions_by_key(registered_name, key):
        if mv.tags.get(CORRUPT_TAG):
            continue
        try:
            fetch_checkpoint(mv.source, dest, mv.tags.get(CHECKSUM_TAG), f"{registered_name} v{mv.version}")
            return mv
        except ChecksumError as err:
            report(f"{err}; not reused, making it again")
            set_tags(registered_name, str(mv.version), {CORRUPT_TAG: str(err)})
    return None


def reporter(log: Callable[[dict[str, Any]], None] | None, label: str) -> Callable[[str], None]:
    """One-line notices of a stage (a corrupt checkpoint skipped): to its console log, else to stderr."""
    import sys

    def report(message: str) -> None:
        if log is not None:
            log({"stage": message})
        else:
            print(f"{label}: {message}", file=sys.stderr, flush=True)

    return report


def model_id_of(mv: Any) -> str:
    """The LoggedModel id of a version (search results may leave `model_id` empty; the source names it)."""
    source = str(mv.source or "")
    return getattr(mv, "model_id", None) or (source.removeprefix("models:/") if source.startswith("models:/m-") else "")


def run_metrics(run_id: str | None) -> dict[str, float]:
    """The metrics of run `run_id` ({} when there is no such run)."""
    import mlflow

    if not run_id:
        return {}
    try:
        return dict(client().get_run(run_id).data.metrics)
    except mlflow.exceptions.MlflowException:
        return {}


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
