"""A read-only view of a local sqlite tracking store that does not import MLflow: what `unlearn status` reads.

Importing MLflow and opening its store costs 4-5 s of CPU on 2 cores; `unlearn status` reads a few
rows (aliases, version tags, the deletion ledger). For a `sqlite:///` store whose schema is the one the
pinned MLflow writes (its alembic revision, checked), this reads them with `sqlite3`, opened read-only.
Anything else (another store, another schema, a body kept only as an artifact) raises `NotReadable`
and the caller goes through MLflow. `tests/flows/test_status_fast.py` holds both answers equal.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .ledger import EXPERIMENT, entry_from_tags, merge_entries

# The alembic revision of MLflow 3.17.2's schema (a test checks it against the installed MLflow's head).
SCHEMA_REVISION = "dc11669786a5"
WORKSPACE = "default"


class NotReadable(Exception):
    """This store cannot be read here; read it through MLflow."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other store."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) and "?" not in uri else None


class SqliteStore:
    """Registry and ledger reads of one sqlite tracking store (the same answers as `flows._registry`)."""

    def __init__(self, uri: str):
        path = sqlite_file(uri)
        if path is None or not path.is_file():
            raise NotReadable(f"not an existing sqlite store: {uri}")
        try:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            revision = self._db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as err:
            raise NotReadable(f"{path}: {err}") from None
        if revision is None or revision[0] != SCHEMA_REVISION:
            raise NotReadable(f"{path}: schema {revision and revision[0]}, not {SCHEMA_REVISION}")

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise NotReadable(str(err)) from None

    def alias_version(self, name: str, alias: str) -> str | None:
        rows = self._rows("SELECT version FROM registered_model_aliases WHERE workspace=? AND name=? AND alias=?",
                          WORKSPACE, name, alias)
        return str(rows[0][0]) if rows else None

    def version_exists(self, name: str, version: str | None) -> bool:
        if not version or not str(version).isdigit():
            return False
        return bool(self._rows("SELECT 1 FROM model_versions WHERE workspace=? AND name=? AND version=? "
                               "AND current_stage != 'Deleted_Internal'", WORKSPACE, name, int(version)))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        if not self.version_exists(name, version):
            raise NotReadable(f"{name} has no version {version}")
        return dict(self._rows("SELECT key, value FROM model_version_tags WHERE workspace=? AND name=? AND "
                               "version=?", WORKSPACE, name, int(version)))

    def history(self, name: str) -> list[str]:
        rows = self._rows("SELECT value FROM registered_model_tags WHERE workspace=? AND name=? AND "
                          "key='production_history'", WORKSPACE, name)
        return [v for v in (rows[0][0] if rows else "").split(",") if v]

    def running_runs(self, experiment: str) -> int:
        """How many runs of `experiment` are RUNNING (live ones, or left so by a dead process)."""
        return self._rows("SELECT count(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                          "WHERE e.workspace=? AND e.name=? AND r.status='RUNNING' AND r.lifecycle_stage='active'",
                          WORKSPACE, experiment)[0][0]

    def parent_run(self, run_id: str) -> tuple[str, int | None]:
        """(the parent run of `run_id`, else itself; that run's start time in ms)."""
        parent = self._rows("SELECT value FROM tags WHERE run_uuid=? AND key='mlflow.parentRunId'", run_id)
        run_id = parent[0][0] if parent else run_id
        start = self._rows("SELECT start_time FROM runs WHERE run_uuid=?", run_id)
        return run_id, start[0][0] if start else None

    def entries(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """The deletion ledger (`flows.ledger.Ledger.entries`), oldest first."""
        runs = self._rows(
            "SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE e.workspace=? AND e.name=? AND r.lifecycle_stage='active' ORDER BY r.start_time, r.run_uuid",
            WORKSPACE, EXPERIMENT)
        tagged = []
        for (run_id,) in runs:
            tags = dict(self._rows("SELECT key, value FROM tags WHERE run_uuid=?", run_id))
            if tags.get("ledger.hash"):
                tagged.append((run_id, tags))
        return merge_entries(tagged, dataset, lambda run_id, tags: entry_from_tags(run_id, tags, _no_artifact))


def _no_artifact() -> str:
    raise NotReadable("a request body is kept only as an artifact")
