"""`unlearn status` reads a local sqlite store without MLflow (and `status`/`methods` without torch), and
says exactly what the MLflow-backed reading says. Private sqlite store, real registered versions.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from flowtest_utils import BETTER, GOOD, fake_outputs

from flows import _registry as R
from flows import deletions, status
from flows.context import StageContext
from flows.ledger import Ledger
from flows.production import promote_version, rollback
from flows.promote import register_and_promote as promote_stage
from flows.settings import tracking_uri
from flows.store_sql import SCHEMA_REVISION, NotReadable, SqliteStore

NAME = "digits-mlp"


def _both(root, params, monkeypatch) -> tuple[dict, dict]:
    """(sqlite reading, MLflow reading) of the same store."""
    fast = status.status_report(root, params)
    with monkeypatch.context() as m:
        m.setattr(status, "SqliteStore", _unreadable)
        slow = status.status_report(root, params)
    return fast, slow


def _unreadable(uri):
    raise NotReadable("forced: read through MLflow")


def test_schema_revision_is_the_one_mlflow_writes(tracking):
    import sqlite3

    db = sqlite3.connect(tracking.removeprefix("sqlite:///"))
    assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_REVISION


def test_sqlite_reading_equals_mlflow_reading_through_moves(registry, monkeypatch):
    from unlearning.datasets import load_dataset

    root, params, (v_base, v1, v2) = registry
    assert _both(root, params, monkeypatch)[0] == _both(root, params, monkeypatch)[1]  # nothing in production
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    promote_stage(StageContext(root, params))
    ledger = Ledger(root, params)
    ds = load_dataset("digits")
    pending, _ = deletions.create(ledger, ds, ids=[4, 5, 6])
    refused, _ = deletions.create(ledger, ds, classes=["3"])
    ledger.set_status([refused["hash"]], "refused", reasons=["a reason"])
    R.set_tags(NAME, v1, {"base_version": v_base})
    promote_version(root, params, v1)
    fast, slow = _both(root, params, monkeypatch)
    assert fast == slow
    assert fast["production"]["version"] == v1 and fast["production"]["previous"] == v2
    assert fast["requests"] == {"pending": 1, "done": 0, "refused": 1, "cancelled": 0}
    assert fast["pending"][0]["hash"] == pending["hash"] and fast["refused"][0]["reasons"] == ["a reason"]
    assert [b["version"] for b in fast["production"]["lineage"]] == [v_base]
    rollback(root, params)
    fast, slow = _both(root, params, monkeypatch)
    assert fast == slow and fast["production"]["version"] == v2 and fast["production"]["previous"] is None
    assert "(previous: none)" in status.render(fast)


def test_a_move_cut_short_is_read_and_completed_through_mlflow(registry, monkeypatch):
    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1}, {"finetune": GOOD})
    promote_stage(StageContext(root, params.model_copy(update={"unlearn": params.unlearn.model_validate(
        {"methods": ["finetune"]})})))
    R.set_alias(NAME, "production", v2)  # a promotion that stopped right after moving the alias
    store = SqliteStore(tracking_uri(root, params))
    assert store.history(NAME) == [v1]
    store.close()
    used = []
    monkeypatch.setattr(status, "setup_mlflow", lambda *a: used.append("mlflow") or R.client())
    report = status.status_report(root, params)
    assert used == ["mlflow"] and report["production"]["previous"] == v1 and R.history(NAME) == [v1, v2]


def test_status_and_methods_import_neither_torch_nor_mlflow(registry):
    root, _, (v_base, v1, v2) = registry
    R.set_alias(NAME, "production", v1)
    R.set_history(NAME, [v1])
    code = ("import contextlib, io, json, sys, flows.cli as c\n"
            "out = {}\n"
            "for cmd in (['status', '--json', '--root', sys.argv[1]], ['methods', '--json']):\n"
            "    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        assert c.main(cmd) == 0\n"
            "    out[cmd[0]] = json.loads(buf.getvalue())\n"
            "out['loaded'] = sorted(m for m in ('torch', 'mlflow', 'prefect', 'dvc') if m in sys.modules)\n"
            "print(json.dumps(out))\n")
    run = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["status"]["production"]["version"] == v1
    assert "scrub" in [m["name"] for m in out["methods"]]


@pytest.mark.parametrize("uri", ["postgresql://h/db", "sqlite:///does/not/exist.db", "sqlite:///x.db?mode=ro"])
def test_other_stores_are_not_read_directly(uri):
    with pytest.raises(NotReadable):
        SqliteStore(uri)
