"""Idempotent reruns and corrupt checkpoints, end to end on a temporary project (git + DVC, own sqlite store).

- a rerun with nothing changed registers no version, moves no alias and leaves dvc.lock byte-identical;
- a rerun after deleting a method's outputs reuses the version registered under the same content key;
- a truncated base artifact in the store is reported in one line and the base is trained again;
- a truncated production artifact (the base of a deletion run) is refused in one line that names the way out.

The tests build on each other (module-scoped fixtures, file order), so the expensive runs happen once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from flowtest_utils import TINY, make_project, new_store

MODEL = "digits-mlp"


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_template):
    root = make_project(tmp_path_factory.mktemp("idem"), {**TINY, ("unlearn", "methods"): ["finetune"]})
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = new_store(mlflow_template, root)
    yield root
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _registry_state() -> tuple[dict[str, str], dict[str, int]]:
    """({version: role}, {alias: version}) of the registered model."""
    c = _client()
    versions = {str(v.version): v.tags.get("role", "") for v in c.search_model_versions(f"name='{MODEL}'")}
    return versions, dict(c.get_registered_model(MODEL).aliases)


def _run(root: Path) -> dict:
    from flows.pipeline import unlearning_pipeline

    out = unlearning_pipeline(root=str(root))
    versions, aliases = _registry_state()
    return {"out": out, "versions": versions, "aliases": aliases, "lock": (root / "dvc.lock").read_bytes()}


def _artifact(version: str) -> Path:
    """The checkpoint file of a registered version inside the store's `mlartifacts/` folder."""
    mv = _client().get_model_version(MODEL, version)
    store = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).parent
    model_id = mv.source.removeprefix("models:/")
    found = [p for p in (store / "mlartifacts").rglob("model.pt") if model_id in p.parts]
    assert len(found) == 1, found
    return found[0]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_fails_its_checksum_in_one_line(tmp_path, tracking):
    """Fast: the checksum of a logged checkpoint, a truncated copy in the store, and the reuse lookup."""
    import mlflow
    import torch

    from flows import _registry as R
    from flows.datastore import materialise
    from flows.settings import load
    from flows.tracking import setup_mlflow
    from unlearning.datasets import load_dataset
    from unlearning.models import create_model, save_checkpoint

    materialise(tmp_path, load_dataset("digits"), {"pending": [], "done": []})  # a logged model reads its preprocessing
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("mlp", 10, (1, 8, 8), width=8), tmp_path / "model.pt")
    sha = R.sha256_file(ckpt)
    exp_id = setup_mlflow(tmp_path, load(tmp_path, None))  # artifacts in mlartifacts/ beside the store
    with mlflow.start_run(experiment_id=exp_id):
        _, uri = R.log_model(ckpt, tmp_path, "base")
    version = R.register(MODEL, uri, {"role": "base", R.KEY_TAG: "k1", R.CHECKSUM_TAG: sha})
    dest = tmp_path / "out" / "model.pt"
    assert str(R.reuse_by_key(MODEL, "k1", dest, print).version) == version and R.sha256_file(dest) == sha
    assert R.reuse_by_key(MODEL, "other", tmp_path / "none.pt", print) is None

    store = Path(tracking.removeprefix("sqlite:///")).parent
    stored = [p for p in store.rglob("model.pt") if "mlartifacts" in p.parts]
    assert len(stored) == 1
    _truncate(stored[0])
    dest.unlink()
    with pytest.raises(R.ChecksumError) as err:
        R.fetch_checkpoint(uri, dest, sha, f"{MODEL} v{version}")
    message = str(err.value)
    assert "\n" not in message and f"v{version}" in message
    assert f"expected {sha[:12]}" in message and "got " in message
    assert not dest.exists()  # a corrupt checkpoint never lands in the workspace
    reports: list[str] = []
    assert R.reuse_by_key(MODEL, "k1", dest, reports.append) is None
    assert len(reports) == 1 and "not reused" in reports[0]
    assert R.version_tags(MODEL, version)[R.CORRUPT_TAG]
    # Without a recorded checksum (a version from before checksums), an unreadable file is refused too.
    with pytest.raises(R.ChecksumError, match="unreadable"):
        R.verify_checkpoint(stored[0], None, "legacy")


class Killed(BaseException):
    """Stands for a SIGKILL: no handler in the stage catches it."""


@pytest.fixture
def stages(tmp_path, tracking):
    """A project folder with data and a split (no DVC, no Prefect): the stage functions called directly."""
    from flows.context import StageContext
    from flows.datastore import materialise
    from flows.version_data import version_data
    from unlearning.datasets import load_dataset
    from unlearning.params import parse_params

    # parse_params, not settings.load: overrides there would make this an experiment (`digits-mlp-exp`).
    params = parse_params({}, ["train.epochs=1", "unlearn.methods=[finetune]", "evaluate.ain=false"])
    materialise(tmp_path, load_dataset("digits"), {"pending": [], "done": []})
    ctx = StageContext(tmp_path, params)
    version_data(ctx)
    return ctx


def _versions() -> list[str]:
    return sorted(str(v.version) for v in _client().search_model_versions(f"name='{MODEL}'"))


def test_a_rerun_after_a_kill_reuses_the_version_the_killed_run_registered(stages, monkeypatch):
    """Kill train_base after it registered its version, and unlearn after it registered (before its alias):
    the reruns reuse those versions and register none (before: a second, orphan-making version each)."""
    import unlearning.steps
    from flows import _registry
    from flows.train import train_base
    from flows.unlearn import unlearn

    def killed(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(unlearning.steps, "evaluate_model", killed)  # runs after the base model is registered
        with pytest.raises(Killed):
            train_base(stages)
    registered = _versions()
    assert len(registered) == 1
    base = train_base(stages)
    assert _versions() == registered and base.version == registered[0]

    with monkeypatch.context() as m:
        m.setattr(_registry, "set_alias", killed)  # the version is registered, its alias not yet set
        with pytest.raises(Killed):
            unlearn(stages, "finetune")
    registered = _versions()
    assert len(registered) == 2
    rec = unlearn(stages, "finetune")
    assert _versions() == registered and rec.version == registered[1]
    assert str(_client().get_model_version_by_alias(MODEL, "candidate-finetune").version) == rec.version


@pytest.fixture(scope="module")
def first(project, prefect_harness):
    return _run(project)


@pytest.fixture(scope="module")
def second(project, first):
    return _run(project)


def test_rerun_with_nothing_changed_registers_nothing_and_keeps_dvc_lock(project, first, second):
    third = _run(project)
    assert second["versions"] == first["versions"] == third["versions"]
    assert second["aliases"] == first["aliases"] == third["aliases"]
    assert "production" in third["aliases"] and "candidate-finetune" in third["aliases"]
    assert third["lock"] == second["lock"] == first["lock"]  # the promotion's "promoted" / "already" is a run fact
    for path in (project / "outputs").rglob("*.json"):
        if "runs" not in path.parts:
            text = path.read_text()
            assert third["out"]["parent_run_id"] not in text and "run_id" not in text, path


def test_rerun_after_deleting_unlearn_outputs_reuses_the_version(project, second):
    from flows.records import StageRun

    before = _registry_state()
    lock = (project / "dvc.lock").read_bytes()
    shutil.rmtree(project / "outputs" / "unlearn" / "finetune")
    out = _run(project)
    assert (out["versions"], out["aliases"]) == before
    assert out["lock"] == lock
    run = StageRun.read(project / "outputs" / "runs" / "unlearn-finetune.json")
    assert run.source == "reused" and run.run_id is None and run.reused_from  # reused: no run of its own


def test_truncated_base_artifact_is_reported_and_retrained(project, second, capsys):
    base = second["out"]["base"].version
    _truncate(_artifact(base))
    out = _run(project)
    err = capsys.readouterr()
    text = err.out + err.err
    assert f"v{base}" in text and "expected" in text and "PytorchStreamReader" not in text
    new_base = out["out"]["base"].version
    assert new_base != base and out["versions"][new_base] == "base"
    assert _client().get_model_version(MODEL, base).tags.get("checkpoint_corrupt")


def test_truncated_production_artifact_refuses_a_deletion_run(project, second, capsys):
    from flows.cli import main

    production = str(_client().get_model_version_by_alias(MODEL, "production").version)
    _truncate(_artifact(production))
    assert main(["request", "--root", str(project), "--ids", "100,101,102"]) == 0
    capsys.readouterr()
    before = _registry_state()
    assert main(["run", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert f"production v{production}" in line and "unlearn rollback" in line and "--force" in line
    assert "PytorchStreamReader" not in err
    assert _registry_state() == before
