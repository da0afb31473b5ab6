"""The pieces of the local stack (flows/stack.py) that need no server: the env and credentials files, free
ports, stopping a recorded process (and only that one), refusing before any side effect when PostgreSQL is
missing, and passwords of tracking URIs kept out of records and MLflow params. tests/scale/test_stack.py
brings the real stack up.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

from flows import stack, stack_procs
from flows.records import StageRun
from flows.tracking import flatten


def test_env_file_round_trip_and_refuses_what_a_shell_would_split(tmp_path):
    path = tmp_path / "env"
    values = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5001", "UNLEARN_DASK_ADDRESS": "tcp://127.0.0.1:8786",
              "UNLEARN_DVC_REMOTE": str(tmp_path / "remote")}
    stack.write_env(path, values)
    assert stack.read_env(path) == values
    out = subprocess.run(["bash", "-c", f"set -a; . {path}; set +a; echo $UNLEARN_DASK_ADDRESS"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "tcp://127.0.0.1:8786"
    for bad in ("a b", "x\ny", "$(id)", "it's"):
        with pytest.raises(ValueError, match="not a plain shell word"):
            stack.write_env(path, {"KEY": bad})


def test_credentials_file_is_private(tmp_path):
    path = tmp_path / "credentials"
    stack.write_credentials(path, {"PGHOST": "127.0.0.1", "PGPASSWORD": "s3cret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.read_env(path)["PGPASSWORD"] == "s3cret"


def test_free_ports_are_free_and_differ():
    first = stack_procs.free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))
        held.listen()
        assert stack_procs.port_open(first)
        second = stack_procs.free_port()
    assert second != first
    with socket.socket() as s:
        s.bind(("127.0.0.1", second))  # nothing holds it


def test_refuses_without_postgres_before_any_side_effect(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "no-pg"
    empty.mkdir()
    monkeypatch.setenv("UNLEARN_PG_BIN", str(empty))
    project = tmp_path / "project"
    project.mkdir()
    assert stack.main(["up", "--dir", str(project)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install postgresql" in err[0], err
    assert not (project / ".stack").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: the cluster then runs as the postgres user")
def test_refuses_a_folder_the_postgres_user_cannot_enter(tmp_path, capsys):
    private = tmp_path / "private"
    (private / "project").mkdir(parents=True)
    private.chmod(0o700)
    assert stack.main(["up", "--dir", str(private / "project")]) == 1
    err = capsys.readouterr().err
    assert "cannot enter" in err and str(private) in err
    assert not (private / "project" / ".stack").exists()


def test_status_and_down_when_not_up(tmp_path, capsys):
    assert stack.main(["status", "--dir", str(tmp_path)]) == 1
    assert "not up" in capsys.readouterr().out
    assert stack.main(["down", "--dir", str(tmp_path)]) == 0


def _spawn(tmp_path, code: str) -> dict:
    log = tmp_path / f"p{len(list(tmp_path.glob('p*.log')))}.log"
    rec = stack_procs.spawn("p", [sys.executable, "-c", code], log, cwd=tmp_path, env={})
    assert stack_procs.wait_until(lambda: "ready" in log.read_text(), 30)
    return rec


def test_stop_terminates_the_group_and_kills_what_ignores_sigterm(tmp_path):
    child = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    rec = _spawn(tmp_path, f"import time; {child}; print('ready', flush=True); time.sleep(60)")
    assert stack_procs.alive(rec)
    assert stack_procs.stop(rec, timeout=10) is False
    assert not stack_procs.alive(rec)
    assert stack_procs.group_members(rec["pid"]) == []  # the grandchild went with the group (zombies aside)

    stubborn = _spawn(tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                "print('ready', flush=True); time.sleep(60)")
    assert stack_procs.stop(stubborn, timeout=1) is True
    assert not stack_procs.alive(stubborn)


def test_a_pid_with_another_start_time_is_not_ours(tmp_path):
    rec = _spawn(tmp_path, "import time; print('ready', flush=True); time.sleep(60)")
    try:
        other = {**rec, "started": str(int(rec["started"]) - 1)}  # the pid, reused by another process
        assert not stack_procs.alive(other)
        assert stack_procs.stop(other) is False
        assert stack_procs.alive(rec)
    finally:
        stack_procs.stop(rec)


def test_tracking_uri_password_stays_out_of_records_and_params(tmp_path):
    uri = "postgresql://mlflow:hunter2@db.internal:5432/mlflow"
    path = tmp_path / "run.json"
    StageRun(stage="unlearn", run_id="r1", tracking_uri=uri).write(path)
    text = path.read_text()
    assert "hunter2" not in text and "mlflow:***@db.internal" in text
    params = flatten({"tracking": {"uri": "http://u:pw-42@mlflow.example/", "experiment": "e"}, "train": {"lr": 0.1}})
    assert params == {"tracking.uri": "http://u:***@mlflow.example/", "tracking.experiment": "e", "train.lr": "0.1"}
