"""A new sqlite store starts as a copy of the venv's migrated template (flows.sqlite_store)."""

from __future__ import annotations

import sqlite3

import pytest

from flows import sqlite_store


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return sqlite_store.build_template(tmp_path_factory.mktemp("template") / "empty.db")


def _tables(db) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_store_seeded_from_the_template_opens_without_migrating(template, tmp_path, monkeypatch):
    import mlflow
    from mlflow.store.db import utils

    def no_migration(engine):
        raise AssertionError("MLflow migrated a seeded store")

    monkeypatch.setenv(sqlite_store.TEMPLATE_ENV, str(template))
    monkeypatch.setattr(utils, "_initialize_tables", no_migration)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    with sqlite_store.first_touch(uri):
        client = mlflow.MlflowClient(uri)
        default = client.get_experiment("0")  # created on first open, as after a migration
        exp = client.create_experiment("x")
    assert default.name == "Default" and str(template.parent) not in default.artifact_location
    assert client.get_experiment(exp).name == "x"
    assert "alembic_version" in _tables(db) and _tables(db) == _tables(template)


def test_seed_never_touches_an_existing_store_or_memory(template, tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"someone else's store")
    assert not sqlite_store.seed(db, template)
    assert db.read_bytes() == b"someone else's store"
    assert not sqlite_store.seed(tmp_path / ":memory:", template)
    assert not sqlite_store.seed(tmp_path / "new.db", tmp_path / "no-template.db")
    assert sqlite_store.seed(tmp_path / "new.db", template)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "new.db"]  # no temporary file left
