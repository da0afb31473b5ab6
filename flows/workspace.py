"""A stage on a Dask worker that cannot see the driver's folder: what travels, and how it comes back.

Design (issue #14). The driver (the process running the flow, owner of the checkout, dvc.lock and the locks)
never shares a disk with a worker; everything a stage reads reaches the worker through a store:
- **Payload** (driver -> worker, in the Dask task's arguments): the typed params, the parent run id and
  tracking URI, the project's small text files (params.yaml, dvc.yaml, dvc.lock, and the records, metrics,
  run files and calibration profiles under outputs/: JSON and the like, never a checkpoint or an image), and
  for each checkpoint the stage reads a reference `(uri, sha256)`.
- **Workspace**: the worker writes those files into a fresh folder of its own (`UNLEARN_WORKER_DIR`, else its
  Dask local directory, under `unlearn/tasks/`), pulls `data/` from the DVC remote by the hash dvc.lock records
  (a DVC cache per worker keeps later pulls local) and checks it against the split's data hash, and fetches
  each checkpoint from MLflow (a registered model by its `models:/` URI, another one from the run artifact
  it was uploaded as) verified by SHA-256. The stage function then runs there, unchanged.
- **Outputs** (worker -> driver): every file under outputs/ that the stage created or changed (found by
  hashing the folder before and after) is uploaded as artifacts of the pipeline's parent run under
  `stages/<stage>/<attempt>/`, with a manifest of SHA-256s; files it deleted are listed. The driver downloads
  them, checks each hash, writes them into its checkout and `dvc commit`s the stage as in a local run, so
  `dvc status`, outputs/summary.json and content-key reuse behave the same.
The ledger and the run lease live in MLflow (flows.ledger, flows.locks) and are used by the driver only
(version_data and register_and_promote run there); a worker's runs carry the driver's lease ticket, so
`flows.recovery` tells them apart as it does the driver's own.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _dvc
from .removals import remove
from .settings import CHECKPOINT, DATA_DIR, MODEL_FILE, RECORD_FILE, SPLIT_FILE

TEXT_FILES = ("params.yaml", "dvc.yaml", "dvc.lock", ".dvcignore")
SKIP_SUFFIXES = (".pt", ".png", ".tmp")  # checkpoints travel by reference; images are outputs only
SKIP_DIRS = ("outputs/calibration/models",)  # the calibration proxy-model cache (not part of any stage)


@dataclass(frozen=True)
class Payload:
    """Everything a stage needs on a worker besides the stores."""

    stage: str
    method: str | None
    seed: int | None
    params: Any
    parent_run_id: str
    tracking_uri: str
    files: dict[str, bytes]
    checkpoints: dict[str, tuple[str, str | None]]  # relpath -> (models:/ or runs:/ URI, sha256)
    dvc_remote: str
    data_hash: str
    lease: tuple[str, str] | None = None  # (registered model, the driver's lease ticket)
    git_commit: str = "unknown"


@dataclass
class Bundle:
    """What a stage on a worker changed under outputs/: uploaded as artifacts of the parent run."""

    artifact_path: str
    files: dict[str, str] = field(default_factory=dict)  # relpath -> sha256
    removed: list[str] = field(default_factory=list)  # files, and folders the stage removed as a whole
    kept: list[str] = field(default_factory=list)  # files the stage (re)wrote inside a removed folder


def new_payload(root: Path, params: Any, stage: str, method: str | None, seed: int | None, *, parent_run_id: str,
                uri: str, remote: str, commit: str, checkpoints: dict[str, tuple[str, str | None]] | None = None,
                lease: tuple[str, str] | None = None) -> Payload:
    """The payload of one task, from the driver's checkout now; `uri` replaces the params' tracking URI."""
    tracking = params.tracking.model_copy(update={"uri": uri})
    return Payload(stage=stage, method=method, seed=seed, params=params.model_copy(update={"tracking": tracking}),
                   parent_run_id=parent_run_id, tracking_uri=uri, files=small_files(root),
                   checkpoints=checkpoints or {}, dvc_remote=remote, data_hash=split_hash(root), lease=lease,
                   git_commit=commit)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe(rel: str) -> str:
    """A relative path inside the workspace (a payload never names a path outside it)."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"payload path {rel!r} is not a relative path inside the workspace")
    return path.as_posix()


def small_files(root: Path) -> dict[str, bytes]:
    """The project's text files and the small files under outputs/ (records, metrics, run files, profiles)."""
    files = {name: (root / name).read_bytes() for name in TEXT_FILES if (root / name).is_file()}
    outputs = root / "outputs"
    for path in sorted(outputs.rglob("*")) if outputs.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.name.endswith(SKIP_SUFFIXES) and not rel.startswith(SKIP_DIRS):
            files[rel] = path.read_bytes()
    return files


def needed_checkpoints(root: Path, params: Any, stage: str, method: str | None) -> dict[str, Any]:
    """relpath -> the record that names each checkpoint `stage` reads (its model URI and SHA-256)."""
    from .records import ModelRecord, SeedRecord, UnlearnRecord
    from .unlearn_seed import seed_dir

    if stage not in ("unlearn", "unlearn_seed", "evaluate"):
        return {}  # train_base / retrain_oracle make (or fetch by key) their own models
    out: dict[str, Any] = {f"outputs/base/{CHECKPOINT}": ModelRecord.read(root / "outputs/base" / MODEL_FILE)}
    if stage != "evaluate":
        return out
    oracle = ModelRecord.read(root / "outputs/oracle" / MODEL_FILE)
    if not oracle.skipped:
        out[f"outputs/oracle/{CHECKPOINT}"] = oracle
    unlearned = UnlearnRecord.read(root / "outputs/unlearn" / str(method) / RECORD_FILE)
    if unlearned.skipped:
        return out
    out[f"outputs/unlearn/{method}/{CHECKPOINT}"] = unlearned
    for s in params.evaluate.seeds[1:]:
        folder = seed_dir(root, str(method), s)
        rec = SeedRecord.read(folder / RECORD_FILE)
        if not rec.skipped:
            out[(folder / CHECKPOINT).relative_to(root).as_posix()] = rec
    return out


def snapshot(root: Path) -> dict[str, str]:
    """relpath -> sha256 of every file under `root`/outputs."""
    outputs = root / "outputs"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(outputs.rglob("*")) if p.is_file()} if outputs.is_dir() else {}


def worker_base() -> Path:
    """This worker's own folder: `UNLEARN_WORKER_DIR`, else its Dask local directory, else a temp folder."""
    import os

    if os.environ.get("UNLEARN_WORKER_DIR"):
        return Path(os.environ["UNLEARN_WORKER_DIR"]).resolve() / "unlearn"
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "unlearn"
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir()) / "unlearn-worker"


def build(payload: Payload, base: Path) -> Path:
    """A fresh workspace under `base` from the payload: text files, data pulled, checkpoints fetched."""
    ws = base / "tasks" / f"{payload.stage}-{payload.method or 'all'}-{uuid.uuid4().hex[:8]}"
    ws.mkdir(parents=True)
    for rel, data in payload.files.items():
        path = ws / _safe(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _dvc.pull(ws, [DATA_DIR], url=payload.dvc_remote, cache=base / "dvc-cache")
    from .datastore import content_hash

    got = content_hash(ws)
    if got != payload.data_hash:
        raise RuntimeError(f"the data version pulled from the DVC remote ({got[:12]}) is not this run's "
                           f"({payload.data_hash[:12]}): dvc.lock does not record this run's data/ (a run "
                           "with --set that changed it?) or the remote lacks it; run `unlearn run` with "
                           "params.yaml, or push the data version")
    for rel, (uri, sha) in payload.checkpoints.items():
        fetch(uri, ws / _safe(rel), sha, rel)
    return ws


def remote_url(root: Path, params: Any) -> str | None:
    """The DVC remote workers pull the data version from: `UNLEARN_DVC_REMOTE`, `orchestration.dvc_remote`,
    the project's default DVC remote, else (a local cluster only: same machine) the driver's DVC cache."""
    from .runner import scheduler_address

    url = _dvc.remote_url(root, params.orchestration.dvc_remote) or default_remote(root)
    if url is None and not scheduler_address(params) and (root / ".dvc").is_dir():
        url = str(root / ".dvc" / "cache")  # DVC 3's cache has a remote's layout (files/md5/...)
    return url


def default_remote(root: Path) -> str | None:
    """The URL of the project's default DVC remote (`dvc remote default`), or None (read from .dvc/config)."""
    if not (root / ".dvc").is_dir():
        return None
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    name = config.get("core", {}).get("remote")
    return config.get("remote", {}).get(name, {}).get("url") if name else None


@contextmanager
def on_worker(payload: Payload, env: dict[str, str] | None = None) -> Iterator[Path]:
    """On a Dask worker: the payload's workspace in this worker's folder, removed afterwards, with `env` set
    meanwhile. The worker's own `MLFLOW_TRACKING_URI` wins (its credentials stay in its environment), else
    the driver's."""
    import os

    from .runner import environ

    uri = os.environ.get("MLFLOW_TRACKING_URI") or payload.tracking_uri
    ws = None
    with environ({**(env or {}), "MLFLOW_TRACKING_URI": uri}):
        try:
            ws = build(payload, worker_base())
            yield ws
        finally:
            if ws is not None:
                shutil.rmtree(ws, ignore_errors=True)


def require_remote(root: Path, params: Any) -> str:
    """`remote_url`, or one line saying how to set one."""
    url = remote_url(root, params)
    if url is None:
        raise RuntimeError("no DVC remote for the workers: set orchestration.dvc_remote or UNLEARN_DVC_REMOTE")
    return url


def push_data(root: Path, url: str) -> None:
    """`dvc push data` to `url` (the version dvc.lock records); nothing when `url` is the driver's own cache."""
    if Path(url) != root / ".dvc" / "cache":
        _dvc.push_if_remote(root, DATA_DIR, url)


def fetch(uri: str, dest: Path, sha: str | None, what: str) -> None:
    """A checkpoint from MLflow to `dest`, verified by SHA-256 before it is put in place."""
    import mlflow

    from . import _registry as registry

    if uri.startswith("models:/"):
        registry.fetch_checkpoint(uri, dest, sha, what)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        registry.verify_checkpoint(local, sha, what)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)


def upload(ws: Path, before: dict[str, str], parent_run_id: str, key: str, deleted: list[str] = ()) -> Bundle:
    """Upload what the stage changed under outputs/ as artifacts of the parent run; the bundle describing it.

    `deleted`: what the stage removed, workspace or not (`flows.removals.recording`)."""
    import mlflow

    after = snapshot(ws)
    gone = sorted((set(before) - set(after)) | {rel for rel in deleted if rel not in after})
    kept = sorted(rel for rel in after if any(rel.startswith(g + "/") for g in gone))
    bundle = Bundle(artifact_path=f"stages/{key}", removed=gone, kept=kept)
    bundle.files = {rel: sha for rel, sha in after.items() if before.get(rel) != sha}
    if bundle.files:
        with tempfile.TemporaryDirectory() as tmp:
            for rel in bundle.files:
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ws / rel, Path(tmp) / rel)
            mlflow.MlflowClient().log_artifacts(parent_run_id, tmp, bundle.artifact_path)
    return bundle


def apply(root: Path, bundle: Bundle, parent_run_id: str) -> dict[str, str]:
    """Write a stage's outputs from its bundle into the driver's checkout (each file checked against its
    SHA-256 first, then put in place); delete what it deleted. Returns relpath -> runs:/ URI of each file."""
    import mlflow

    origins = {rel: f"runs:/{parent_run_id}/{bundle.artifact_path}/{rel}" for rel in bundle.files}
    if bundle.files:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(run_id=parent_run_id,
                                                             artifact_path=bundle.artifact_path, dst_path=tmp))
            for rel, sha in bundle.files.items():
                got = hashlib.sha256((local / _safe(rel)).read_bytes()).hexdigest()
                if got != sha:
                    raise RuntimeError(f"{rel}: downloaded output sha256 {got[:12]} != {sha[:12]} uploaded")
            for rel in bundle.files:
                dest = root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp_dest = dest.with_name(dest.name + ".tmp")
                shutil.copyfile(local / rel, tmp_dest)
                tmp_dest.replace(dest)
    remove(root, [_safe(rel) for rel in bundle.removed], keep=set(bundle.kept) | set(bundle.files))
    return origins


def split_hash(root: Path) -> str:
    from .records import SplitRecord

    return SplitRecord.read(root / SPLIT_FILE).data_hash
