"""`unlearn run` with nothing changed exits early (flows.fast_path), and only then.

One pipeline run on a temporary project (git + DVC, own sqlite store); then each change the normal path
would act on (params, a deletion request, a deleted output, the lock held, production moved by hand, a lost
registry version) must send the run down the normal path, and undoing it must bring the early exit back.
The tests build on each other (module-scoped fixture, file order); the destructive one comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from flowtest_utils import TINY, make_project, new_store

MODEL = "digits-mlp"


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_template, prefect_harness):
    from flows.pipeline import unlearning_pipeline

    root = make_project(tmp_path_factory.mktemp("fast"), {**TINY, ("unlearn", "methods"): ["finetune"]})
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = new_store(mlflow_template, root)
    out = unlearning_pipeline(root=str(root))
    yield root, out
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _line(root):
    from flows.fast_path import unchanged

    return unchanged(root, "params.yaml", [])


def _why(root, overrides=()):
    """Why the normal path runs ("" when it would not)."""
    from flows.fast_path import decide

    line, why = decide(root, "params.yaml", list(overrides))
    assert (line is None) == bool(why)
    return why


def _client():
    import mlflow

    return mlflow.MlflowClient()


def test_clean_rerun_exits_early_in_one_line_without_heavy_imports(project):
    root, out = project
    line = _line(root)
    production = out["promotion"].production
    assert line is not None and "\n" not in line
    assert out["parent_run_id"] in line and f"{MODEL} v{production}" in line and "--force" in line
    code = ("import sys; from flows.cli import main; rc = main(['run', '--root', sys.argv[1]]); "
            "print('HEAVY', sorted(m for m in ('torch', 'mlflow', 'prefect') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [line, "HEAVY []"]  # the flow never started: nothing else printed


def test_a_params_change_takes_the_normal_path(project):
    root, _ = project
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(params.replace("finetune: {}", "finetune: {epochs: 2}"))
    try:
        assert "finetune: {epochs: 2}" in (root / "params.yaml").read_text()
        assert _why(root) == "dvc status: changed"
        assert _why(root.parent) == "not a DVC project's params.yaml"
    finally:
        (root / "params.yaml").write_text(params)
    assert _line(root) is not None
    assert _why(root, ["train.epochs=2"]) == "--set given"  # always the normal path


def test_a_new_deletion_request_takes_the_normal_path(project, capsys):
    from flows.cli import main

    root, _ = project
    assert main(["request", "--root", str(root), "--ids", "5,6"]) == 0
    req = capsys.readouterr().out.split()[3]  # "recorded deletion request <hash> ..."
    assert _why(root) == "a pending deletion request"
    assert main(["request", "--root", str(root), "--cancel", req]) == 0
    assert _line(root) is not None  # a cancelled request is nothing to do


def test_a_deleted_output_takes_the_normal_path(project, tmp_path):
    root, _ = project
    metrics = root / "outputs" / "metrics" / "finetune.json"
    shutil.copy2(metrics, tmp_path / "m.json")
    metrics.unlink()
    assert _why(root) == "dvc status: changed"
    shutil.copy2(tmp_path / "m.json", metrics)
    assert _line(root) is not None


def test_the_lock_held_by_another_run_takes_the_normal_path(project):
    from flows.locks import Owner, ProjectLock

    root, _ = project
    lock = ProjectLock(root)
    assert lock.try_acquire(Owner.me("unlearn run")) is None
    try:
        assert _why(root) == "another process holds the project lock"
    finally:
        lock.release()
    assert _line(root) is not None


def test_production_moved_by_hand_takes_the_normal_path(project):
    root, out = project
    production = str(out["promotion"].production)
    base = json.loads((root / "outputs" / "base" / "model.json").read_text())["version"]
    c = _client()
    c.set_registered_model_alias(MODEL, "production", base)
    try:
        assert _why(root) == "a production move to complete"  # history says otherwise: the normal path decides
    finally:
        c.set_registered_model_alias(MODEL, "production", production)
    assert _line(root) is not None


def test_force_runs_the_flow(project, monkeypatch, capsys):
    from flows import pipeline
    from flows.cli import main

    root, _ = project
    called = []

    def flow(**kwargs):
        called.append(kwargs)
        raise RuntimeError("flow reached")

    monkeypatch.setattr(pipeline, "unlearning_pipeline", flow)
    assert main(["run", "--root", str(root), "--force"]) == 1
    assert called and "flow reached" in capsys.readouterr().err


def test_a_lost_registry_version_takes_the_normal_path(project):
    root, _ = project
    base = json.loads((root / "outputs" / "base" / "model.json").read_text())["version"]
    assert _line(root) is not None
    _client().delete_model_version(MODEL, base)  # neither production nor a candidate: only its record names it
    assert _why(root) == "base version changed"
