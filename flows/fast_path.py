"""`unlearn run` with nothing to do: one line in a few seconds, before Prefect, MLflow or torch are imported.

A rerun on the normal path with nothing changed took 47 s on the 2-core CPU (imports, Prefect's temporary
server, a parent run, each stage's DVC and registry checks, the promotion decided again) to change nothing.
`unchanged` answers instead, but only when every input that path reads is as the last run left it:

- no `--set`, params.yaml as the params file, a DVC project, no other process holding the project lock;
- devices `auto` or `cpu` (a missing GPU is the normal path's error), no `request.ids_file` (its contents
  are no DVC dependency), a dataset that is embedded or whose files are all older than the data version;
- a local sqlite store read without MLflow (`flows.store_sql`): no run left RUNNING (recovery closes those),
  no pending deletion request, the done requests exactly those the data version removed, the last run
  forgot `params.request` (not deletion requests), nothing a crash left for `production.reconcile`;
- the registry as the records say: `production` and `previous` as outputs/promote.json, each method's
  `candidate-<m>` (and a passing one's `staging-<m>`) on its recorded version, and the SHA-256 tag of every
  recorded version (base, oracle, each method) equal to its record's;
- `dvc status` clean for every stage (one `Repo.status()`; checked last, it costs most).

Anything else, or any error while checking, means: run the normal path. `unlearn run --force` always does.
Not seen here: a registered artifact corrupted in the store while its tag still matches (the normal path
notices it only when it has to fetch that artifact, which an unchanged rerun does not either).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from .records import read_json
from .settings import MODEL_FILE, PROMOTE_FILE, RECORD_FILE, SPLIT_FILE, stage_dir

EMBEDDED = frozenset({"digits", "diabetes"})  # scikit-learn's: nothing on disk can change them
CHECKSUM_TAG = "checkpoint_sha256"  # flows._registry.CHECKSUM_TAG (that module imports MLflow)


class _Doubt(Exception):
    """Why the normal path must run (one short phrase)."""


def skip_run(root: Path, params_path: str, overrides: list[str], force: bool) -> bool:
    """Print the one line and return True when nothing changed (and not `force`); else say why the flow runs."""
    line, why = (None, "--force") if force else decide(root, params_path, overrides)
    print(line or "unlearn run: loading params, torch, MLflow and Prefect (a local Prefect server starts in "
          f"5-17 s; the flow runs: {why}) ...", file=None if line else sys.stderr, flush=True)
    return line is not None


def unchanged(root: Path, params_path: str, overrides: list[str]) -> str | None:
    """The line to print when a run would change nothing; None when the normal path must run."""
    return decide(root, params_path, overrides)[0]


def decide(root: Path, params_path: str, overrides: list[str]) -> tuple[str | None, str]:
    """(the line, "") when a run would change nothing, else (None, why the normal path runs)."""
    try:
        return _check(root, params_path, overrides), ""
    except _Doubt as doubt:
        return None, str(doubt)
    except Exception as err:  # noqa: BLE001 - any doubt (unreadable record, store, DVC error) means the normal path
        return None, f"not checked: {type(err).__name__}"


def _require(ok: Any, why: str) -> None:
    if not ok:
        raise _Doubt(why)


def _check(root: Path, params_path: str, overrides: list[str]) -> str:
    from .settings import load, tracking_uri
    from .store_sql import SqliteStore

    _require(not overrides, "--set given")
    _require(str(params_path) == "params.yaml" and (root / ".dvc").is_dir(), "not a DVC project's params.yaml")
    _require((root / PROMOTE_FILE).exists(), "no earlier run")
    params = load(root, params_path, methods=False)
    _require(not {params.train.device, params.evaluate.device} - {"auto", "cpu"}, "a device other than auto/cpu")
    _require(params.request.ids_file is None, "request.ids_file")
    split = read_json(root / SPLIT_FILE)
    _require(not split.get("requests"), "the last run forgot deletion requests")
    _require(_dataset_unchanged(params, (root / SPLIT_FILE).stat().st_mtime), "dataset files newer than data/")
    _require(not _project_locked(root), "another process holds the project lock")
    store = SqliteStore(tracking_uri(root, params))
    try:
        made = _store_as_recorded(store, root, params, split)
    finally:
        store.close()
    from ._dvc import status_clean

    _require(status_clean(root), "dvc status: changed")
    return (f"unlearn run: nothing changed (dvc status clean, no pending deletion request, registry as recorded); "
            f"outputs made by {made}. `unlearn run --force` runs the pipeline anyway")


def _dataset_unchanged(params: Any, since: float) -> bool:
    """An embedded dataset, or one whose files are all older than the data version (`since`)."""
    if params.data.name in EMBEDDED:
        return True
    if params.data.download:
        return False
    folder = Path(params.data.root or os.environ.get("UNLEARNING_DATA_ROOT", "datasets")).expanduser()
    if not folder.is_dir():
        return False
    for top, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            if os.stat(os.path.join(top, name)).st_mtime >= since:
                return False
    return folder.stat().st_mtime < since


def _project_locked(root: Path) -> bool:
    """Whether a process holds the project lock (`flows.locks.ProjectLock`, an flock) right now.

    Read from /proc/locks, not by taking the lock: a run starting meanwhile would find it taken and refuse.
    """
    from .locks import LOCK_FILE

    path = root / LOCK_FILE
    if not path.exists():
        return False
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return True  # cannot tell: the normal path decides
    inode = f":{path.stat().st_ino}"
    return any("FLOCK" in line.split()[:3] and any(f.endswith(inode) for f in line.split()[4:7])
               for line in table.splitlines())


def _store_as_recorded(store: Any, root: Path, params: Any, split: dict[str, Any]) -> str:
    """'pipeline run <id> (<when>); production <model> vN (<method>)' when the store agrees with every record."""
    from .production import needs_reconcile
    from .settings import registered_model_name

    name = registered_model_name(params)
    promo = read_json(root / PROMOTE_FILE)
    _require(promo.get("registered_model") == name, "another registered model")
    _require(not store.running_runs(params.tracking.experiment), "a run is RUNNING")
    entries = store.entries(params.data.name)
    _require(not any(r["status"] == "pending" for r in entries), "a pending deletion request")
    done = {r["hash"] for r in entries if r["status"] == "done"}
    _require(done == set(split.get("removed_requests") or []), "done deletion requests changed")
    _require(not needs_reconcile(store, params, name), "a production move to complete")
    for alias in ("production", "previous"):
        _require(store.alias_version(name, alias) == _str(promo.get(alias)), f"{alias} moved")
    for role in ("base", "oracle"):
        _require(_checksum_ok(store, name, read_json(stage_dir(root, role) / MODEL_FILE)), f"{role} version changed")
    for method in params.unlearn.methods:
        rec = read_json(stage_dir(root, "unlearn", method) / RECORD_FILE)
        if rec.get("skipped"):
            continue
        _require(_checksum_ok(store, name, rec), f"{method} version changed")
        owner, version = rec.get("registered_model") or name, _str(rec.get("version"))
        aliases = ["candidate"] + (["staging"] if method in promo.get("passing", []) else [])
        _require(owner != name or all(store.alias_version(name, f"{a}-{method}") == version for a in aliases),
                 f"an alias of {method} moved")
    return _made_by(store, root, name, promo.get("production"))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _checksum_ok(store: Any, name: str, rec: dict[str, Any]) -> bool:
    """A skipped or unregistered record, or a version whose SHA-256 tag is the record's."""
    if rec.get("skipped") or not rec.get("version"):
        return True
    owner, version = rec.get("registered_model") or name, str(rec["version"])
    if not store.version_exists(owner, version):
        return False
    tags = store.version_tags(owner, version)
    return bool(rec.get("checkpoint_sha256")) and tags.get(CHECKSUM_TAG) == rec["checkpoint_sha256"]


def _made_by(store: Any, root: Path, name: str, production: Any) -> str:
    from .settings import RUNS_DIR

    last = read_json(root / RUNS_DIR / "register_and_promote.json")
    run_id, start = store.parent_run(last["run_id"])
    when = dt.datetime.fromtimestamp(start / 1000).strftime("%Y-%m-%d %H:%M") if start else "?"
    prod = "no production model yet"
    if production is not None:
        method = store.version_tags(name, str(production)).get("method")
        prod = f"production {name} v{production}" + (f" ({method})" if method else "")
    return f"pipeline run {run_id} ({when}); {prod}"
