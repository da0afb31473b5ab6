"""Helpers of the pipeline tests (a module with a unique name: test folders here are not packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from flows.records import EvalRecord, ModelRecord, UnlearnRecord, write_json
from flows.settings import MODEL_FILE, RECORD_FILE, metrics_file, stage_dir

REPO = Path(__file__).resolve().parents[2]

# The tiny budget every pipeline test runs with (the real params.yaml stays as it is).
TINY = {
    ("train", "epochs"): 3,
    ("unlearn", "methods"): ["finetune", "neggrad"],
    ("evaluate", "ain"): False,
    ("evaluate", "training_seeds"): [0, 1],  # a band of two retrains (the default has three)
    # Loose gates: the end-to-end tests need a version to pass (gate logic has its own tests).
    ("promote", "gates"): {"forget_acc_vs_oracle": 30.0, "retain_acc_drop": 10.0, "test_acc_drop": 10.0,
                           "mia_vs_oracle": 30.0},
}


def make_project(dest: Path, tiny: dict | None = None) -> Path:
    """A copy of the project (code, dvc.yaml, .dvc/, params.yaml with a tiny budget) as a git + DVC repo."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("flows", "unlearning"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, dest / name)
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy2(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    (dest / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    # As the repository's .gitignore: calibration profiles (with their README) are kept in git, their models not.
    (dest / "outputs" / "calibration").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "outputs" / "calibration" / "README", dest / "outputs" / "calibration" / "README")
    (dest / ".gitignore").write_text("/data\n/outputs/*\n!/outputs/summary.json\n!/outputs/calibration/\n"
                                       "/outputs/calibration/models/\n/mlflow.db\n/mlartifacts/\n/requests/\n"
                                       "__pycache__/\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for (section, key), value in (TINY if tiny is None else tiny).items():
        params.setdefault(section, {})[key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project copy")
    return dest


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(exe), *args], cwd=root, capture_output=True, text=True, check=check,
                          stdin=subprocess.DEVNULL, timeout=600)


def new_store(template: Path, folder: Path) -> str:
    """A private copy of the template store in `folder`; returns its tracking URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


# Fabricated evaluation results for promotion tests: a base, an oracle, and three grades of unlearned model.
BASE = {"forget/acc": 0.99, "retain/acc": 0.99, "test/acc": 0.96, "mia/entropy_lr": 0.80}
ORACLE = {"forget/acc": 0.00, "retain/acc": 0.99, "test/acc": 0.86, "mia/entropy_lr": 0.10}
GOOD = {"forget/acc": 0.01, "retain/acc": 0.985, "test/acc": 0.955, "mia/entropy_lr": 0.12, "oracle/avg_gap": 1.0}
BETTER = {"forget/acc": 0.0, "retain/acc": 0.99, "test/acc": 0.96, "mia/entropy_lr": 0.10, "oracle/avg_gap": 0.5}
BAD = {"forget/acc": 0.30, "retain/acc": 0.90, "test/acc": 0.95, "mia/entropy_lr": 0.40, "oracle/avg_gap": 20.0}


def fake_outputs(root: Path, versions: dict[str, str], metrics: dict[str, dict]) -> None:
    write_json(metrics_file(root, "base"), BASE)
    write_json(metrics_file(root, "oracle"), ORACLE)
    ModelRecord(role="oracle", version="0").write(stage_dir(root, "oracle") / MODEL_FILE)
    for method, version in versions.items():
        UnlearnRecord(method=method, version=version).write(stage_dir(root, "unlearn", method) / RECORD_FILE)
        EvalRecord(method=method).write(stage_dir(root, "evaluate", method) / RECORD_FILE)
        write_json(metrics_file(root, method), metrics[method])
