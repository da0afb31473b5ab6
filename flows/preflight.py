"""Checks a run makes before it does anything: no MLflow run, no registered version, no file written.

`check_run` is called at the top of `unlearn run` and of the flow body (a scheduled run has no CLI in
front of it). It catches what params validation cannot see because it depends on the dataset, the
machine or the tracking store: a request that does not fit the dataset (`request.classes=[42]` on
digits), a device this machine lacks, a tracking URI MLflow cannot use, a sqlite store that is corrupt or
locked, and it creates a new sqlite store safely when several processes start on it at once.

A failed check raises `PreflightError` with one line and the exit code the CLI returns: 2 for a bad
input (usage), 1 for a fault of the environment (a locked or corrupt store, a server that does not answer).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .settings import mask_credentials, tracking_uri

# URI schemes MLflow 3 accepts for a tracking store (a `+driver` suffix is allowed: postgresql+psycopg2).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
SQLITE = "sqlite:///"
LOCK_WAIT_S = 5.0  # how long a locked sqlite store is waited for before the run is refused


class PreflightError(ValueError):
    """A run refused before it started; `exit_code` is 2 for a bad input, 1 for a fault of the environment."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def inside(path: str | Path, root: Path, what: str) -> Path:
    """`path` (relative to the current folder) resolved after symlinks; refused unless it lies in `root`.

    The message names the path as given and the project folder, never anything read from the file.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise PreflightError(f"{what} {path} resolves outside the project folder {root.resolve()}: "
                             "refused (copy the file into the project)")
    return resolved


def check_request(root: Path, params: Any, dataset: Any) -> list[dict[str, Any]]:
    """The request this run would forget resolves against the dataset (what `version_data` does, read-only).

    Returns the pending deletion requests the run will process (hash, kind, resolved ids).
    """
    from unlearning.config import RequestConfig
    from unlearning.requests import resolve

    from .ledger import Ledger
    from .settings import is_service
    from .version_data import _manifest, effective_request

    if params.request.ids_file is not None:
        inside(params.request.ids_file, root, "request.ids_file")
    ledger = Ledger.existing(root, params)  # read only; a store not created yet holds no request
    service = is_service(params)
    manifest = _manifest(ledger, dataset, service) if ledger else {"pending": [], "done": []}  # bad: RequestError
    request, source = effective_request(params, manifest["pending"])
    removed = sorted({i for item in manifest["done"] for i in item["ids"]})
    try:
        resolve(RequestConfig.model_validate(request), dataset).without(removed)
    except ValueError as err:
        where = "request" if source == "params" else "pending deletion requests"
        raise PreflightError(f"{where}: {err}") from None
    return manifest["pending"]


def check_devices(params: Any) -> None:
    """`train.device` / `evaluate.device` name a device this machine has."""
    import torch

    for key, name in (("train.device", params.train.device), ("evaluate.device", params.evaluate.device)):
        if name.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(name.split(":", 1)[1]) if ":" in name else 0
            if index >= count:
                have = f"{count} CUDA device(s)" if count else "no CUDA GPU"
                raise PreflightError(f"{key} is {name!r} but this machine has {have}; "
                                     f"use --set {key}=auto (or cpu)")
        elif name == "mps" and not torch.backends.mps.is_available():
            raise PreflightError(f"{key} is 'mps' but MPS is not available here; use --set {key}=auto (or cpu)")


def check_tracking(root: Path, params: Any) -> str:
    """The tracking URI has a scheme MLflow knows; a sqlite store is readable and not locked. Returns the URI."""
    uri = tracking_uri(root, params)
    source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking.uri"
    shown = mask_credentials(uri)
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(f"{source} {shown!r}: unsupported scheme {scheme!r}; use one of "
                             f"{list(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db)")
    if uri.startswith(SQLITE):
        _check_sqlite(_sqlite_path(uri), source)
    return uri


def _sqlite_path(uri: str) -> Path:
    """The file of a `sqlite:///...` URI (without `?timeout=...` options)."""
    return Path(uri[len(SQLITE):].split("?", 1)[0])


def _check_sqlite(path: Path, source: str) -> None:
    if str(path) == ":memory:":
        return
    if not path.parent.is_dir():
        raise PreflightError(f"{source}: the folder of the sqlite store does not exist: {path.parent}")
    if not path.exists():
        return  # a new store: created by `ensure_store`
    if not path.is_file():
        raise PreflightError(f"{source}: the sqlite store is not a file: {path}")
    try:  # read-only: this check never creates or changes the file
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=LOCK_WAIT_S)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        text = str(err)
        if "locked" in text or "busy" in text:
            raise PreflightError(f"the MLflow store {path} is locked by another process ({text}); wait for it "
                                 "to finish, or point tracking.uri elsewhere", exit_code=1) from None
        raise PreflightError(f"the MLflow store {path} is not a readable sqlite database ({text}); move it "
                             "aside (it may be corrupt) or point tracking.uri elsewhere", exit_code=1) from None


def ensure_store(uri: str, attempts: int = 3) -> None:
    """Create (migrate) a new sqlite store, safe when several processes start on the same new file.

    MLflow migrates a new sqlite file in the first process that opens it; a second process that opens it
    meanwhile fails inside the migration (an `AttributeError`, `table _alembic_tmp_... already exists`, an
    alembic `CommandError`). Runs take an exclusive `flock` on the store's folder while they open it
    (`tracking.first_touch`), so one migrates and the others wait.
    A process that opened the store without this lock (`unlearn status`) can still race: a failure is
    retried after a pause, and the last one is one clear line.
    """
    if not uri.startswith(SQLITE) or str(_sqlite_path(uri)) == ":memory:":
        return
    import mlflow

    from .sqlite_store import first_touch

    path = _sqlite_path(uri)
    with first_touch(uri):  # the same lock as every other first use of the store (tracking.setup_mlflow)
        for attempt in range(attempts):
            try:
                mlflow.MlflowClient(uri).search_experiments(max_results=1)
                return
            except Exception as err:  # noqa: BLE001 - a racing first-time migration fails in many ways
                if attempt == attempts - 1:
                    first = (str(err).strip().splitlines() or [""])[0]
                    raise PreflightError(f"the MLflow store {path} could not be opened or created "
                                         f"({type(err).__name__}: {first}); another process may be "
                                         "creating it: run again", exit_code=1) from None
                time.sleep(2.0 * (attempt + 1))


def check_orchestration(root: Path, params: Any, uri: str) -> None:
    """A Dask run has what workers without the driver's disk need: a DVC project whose data version they can
    pull and, with a scheduler `address` (other machines), a tracking store that is a server and a DVC remote."""
    from .runner import is_dask, scheduler_address
    from .workspace import remote_url

    if not is_dask(params):
        return
    if not (root / ".dvc").is_dir():
        raise PreflightError(f"orchestration.task_runner is dask but {root} is not a DVC project (no .dvc/): "
                             "workers get the data version from DVC; run `dvc init` or use task_runner threads")
    address = scheduler_address(params)
    if not address:
        return  # a local cluster: the same machine, the driver's store and DVC cache are reachable
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme in ("sqlite", "file"):
        raise PreflightError(f"orchestration.address {address}: workers on other machines cannot reach the local "
                             f"tracking store {mask_credentials(uri)!r}; set MLFLOW_TRACKING_URI to an MLflow "
                             "server (http://host:5000) or a database server")
    if remote_url(root, params) is None:
        raise PreflightError(f"orchestration.address {address}: no DVC remote for workers to pull the data version "
                             "from; set orchestration.dvc_remote or UNLEARN_DVC_REMOTE (s3://..., gs://..., a path)")


def check_run(root: Path, params: Any, dataset: Any | None = None,
              create_store: bool = True) -> list[dict[str, Any]]:
    """Every up-front check of a run, cheapest first; the store is created (when new) only once all passed.

    `create_store=False` leaves that to the caller (`unlearn run` does it while Prefect's server starts).
    Returns the pending deletion requests the run will process (`check_request`).
    """
    check_devices(params)
    uri = check_tracking(root, params)
    check_orchestration(root, params, uri)
    if dataset is None:
        from unlearning.datasets import load_dataset

        dataset = load_dataset(params.data.name, params.data.root, params.data.download, **params.data.options())
    pending = check_request(root, params, dataset)
    if create_store:
        ensure_store(uri)
    return pending


def error_line(err: BaseException) -> tuple[int, str]:
    """How the CLI reports an error: (exit code, one line, credentials masked).

    Exit 2 for bad input (params, a deletion request, a refused check), 1 for a fault at run time; an
    unexpected exception is named by its type, with a hint at `--debug` for the traceback.
    """
    from unlearning.params import ConfigError

    from .deletions import RequestError

    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if not isinstance(err, ValueError | FileNotFoundError):  # ConfigError, RequestError are ValueErrors
        text = f"{type(err).__name__}: {text} (run with --debug for the traceback)"
    code = getattr(err, "exit_code", None)
    if not isinstance(code, int):
        code = 2 if isinstance(err, ConfigError | RequestError) else 1
    return code, mask_credentials(text)
