"""The DVC remote of `orchestration.dvc_remote` / UNLEARN_DVC_REMOTE: `push_if_remote` pushes a stage's outs
from one project folder, `pull` fetches the exact version (the hashes in dvc.lock) into another, empty folder
that shares nothing else with it, as a Dask worker does; neither touches `.dvc/config`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows import _dvc

DVC_YAML = """stages:
  version_data:
    cmd: {python} -c "import pathlib; p = pathlib.Path('data'); p.mkdir(exist_ok=True); (p / 'x.txt').write_text('v1')"
    outs:
      - data
"""


def _project(folder: Path) -> Path:
    """A DVC project (no git) whose one stage has run and is recorded in dvc.lock."""
    folder.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True, env=env)
    (folder / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=folder, check=True, env=env)
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Built once (two DVC subprocesses, ~10 s here); each test works on its own copy."""
    return _project(tmp_path_factory.mktemp("template") / "driver")


@pytest.fixture
def source(template, tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(_dvc.REMOTE_ENV, raising=False)
    return Path(shutil.copytree(template, tmp_path / "driver"))


def test_push_then_pull_into_an_empty_folder(source, tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    config = (source / ".dvc" / "config").read_text()
    monkeypatch.setenv(_dvc.REMOTE_ENV, str(remote))

    assert _dvc.push_if_remote(source, "data") is True
    assert any(p.is_file() for p in remote.rglob("*")), "nothing reached the remote"
    assert (source / ".dvc" / "config").read_text() == config
    assert not (source / ".dvc" / "config.local").exists()

    worker = tmp_path / "worker"  # what a worker has: the lock (from git or the task), no data, no cache
    worker.mkdir()
    for name in ("dvc.yaml", "dvc.lock"):
        shutil.copy(source / name, worker / name)
    _dvc.pull(worker, ["version_data"])
    assert (worker / "data" / "x.txt").read_text() == "v1"


def test_pull_by_out_path_and_url_argument(source, tmp_path):
    remote = tmp_path / "remote"
    assert _dvc.push_if_remote(source, "data", url=str(remote)) is True
    worker = tmp_path / "worker"
    worker.mkdir()
    for name in ("dvc.yaml", "dvc.lock"):
        shutil.copy(source / name, worker / name)
    _dvc.pull(worker, ["data"], url=str(remote))
    assert (worker / "data" / "x.txt").read_text() == "v1"


def test_env_overrides_params(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("orchestration:\n  dvc_remote: from-params\n")
    monkeypatch.delenv(_dvc.REMOTE_ENV, raising=False)
    assert _dvc.remote_url(tmp_path) == str(Path("from-params").resolve())
    assert _dvc.remote_url(tmp_path, "s3://bucket/x") == "s3://bucket/x"
    monkeypatch.setenv(_dvc.REMOTE_ENV, "gs://bucket/y")
    assert _dvc.remote_url(tmp_path, "s3://bucket/x") == "gs://bucket/y"


def test_no_remote_pushes_nothing_and_pull_refuses(source, tmp_path):
    assert _dvc.push_if_remote(source, "data") is False
    worker = tmp_path / "worker"
    worker.mkdir()
    with pytest.raises(FileNotFoundError, match="dvc.lock"):
        _dvc.pull(worker, ["version_data"])
    shutil.copy(source / "dvc.yaml", worker / "dvc.yaml")
    shutil.copy(source / "dvc.lock", worker / "dvc.lock")
    with pytest.raises(RuntimeError, match="no DVC remote"):
        _dvc.pull(worker, ["version_data"])
