"""One run at a time (flows/locks.py) and crash hygiene (flows/recovery.py), without a pipeline run: the
project lock, the lease in a private sqlite store, stale leases, orphaned RUNNING runs, the death signal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows import locks, recovery
from flows.cli import main
from flows.settings import load, registered_model_name
from flows.tracking import lease_id, owner_tags

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, tracking):
    (tmp_path / "params.yaml").write_text("data: {name: digits}\nmodel: {name: mlp}\n")
    return tmp_path, load(tmp_path)


def _client():
    import mlflow

    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _elsewhere(pid: int = 4242, command: str = "unlearn run") -> locks.Owner:
    return locks.Owner(pid, "elsewhere", command, time.time())


def _lease(params, owner: locks.Owner, lines: list[str] | None = None) -> locks.Lease:
    lease = locks.Lease(_client(), registered_model_name(params), owner, (lines if lines is not None else []).append)
    lease.enqueue()
    return lease


def test_a_second_holder_of_the_project_lock_is_refused_with_the_holder(project):
    root, params = project
    first = locks.ProjectLock(root)
    assert first.try_acquire(_elsewhere(command="unlearn promote 3")) is None
    try:
        holder = locks.ProjectLock(root).try_acquire(locks.Owner.me("unlearn run"))  # another descriptor
        assert holder is not None and holder.pid == 4242 and holder.host == "elsewhere"
        with pytest.raises(locks.Busy, match=r"^another unlearn promote 3 \(pid 4242 on host elsewhere, started "
                                             r"\d\d:\d\d:\d\d\) holds the project lock .*; use --wait to wait"):
            with locks.hold(root, params, "unlearn run"):
                pass
    finally:
        first.release()
    with locks.hold(root, params, "unlearn run"):  # free again
        with locks.hold(root, params, "unlearn run"):  # this process holds it: nesting is free
            assert lease_id(registered_model_name(params))
    assert lease_id(registered_model_name(params)) is None


def test_cli_promote_and_rollback_refuse_while_another_run_holds_the_lock(project, capsys):
    root, _ = project
    other = locks.ProjectLock(root)
    other.try_acquire(_elsewhere(123))
    try:
        for argv in (["promote", "1"], ["rollback"]):
            assert main([*argv, "--root", str(root)]) == 1
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: another unlearn run (pid 123 on host elsewhere, started ")
            assert err.endswith("; use --wait to wait for it") and "\n" not in err
    finally:
        other.release()


def test_the_lease_serialises_two_clones_and_waits_in_order(project, monkeypatch):
    root, params = project
    model = registered_model_name(params)
    other = _lease(params, _elsewhere())  # a run of another clone (another host) sharing the store
    with pytest.raises(locks.Busy, match=rf"another unlearn run \(pid 4242 on host elsewhere.*holds the lease "
                                         rf"of registered model {model}; use --wait"):
        with locks.hold(root, params, "unlearn run"):
            pass
    assert locks.ProjectLock(root).holder().pid == os.getpid()  # the project lock was taken, then let go
    monkeypatch.setattr(locks, "POLL_S", 0.05)
    lines: list[str] = []
    threading.Timer(1.0, other.release).start()
    t0 = time.monotonic()
    with locks.hold(root, params, "unlearn run", wait=True, say=lines.append):
        assert time.monotonic() - t0 >= 0.9
        later = _lease(params, _elsewhere(7))
        assert later.holder().pid == os.getpid()  # a later ticket queues behind us
        later.release()
    assert lines and lines[0].startswith("waiting for unlearn run (pid 4242 on host elsewhere")


@pytest.mark.parametrize("kind", ["expired", "dead pid"])
def test_a_stale_lease_is_broken_with_a_notice(project, monkeypatch, kind):
    root, params = project
    if kind == "expired":
        monkeypatch.setattr(locks, "TTL_S", -1.0)
        _lease(params, _elsewhere())
        monkeypatch.setattr(locks, "TTL_S", 120.0)
    else:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _lease(params, locks.Owner(dead.pid, socket.gethostname(), "unlearn run", time.time()))
    lines: list[str] = []
    with locks.hold(root, params, "unlearn run", say=lines.append):
        pass
    assert len(lines) == 1 and lines[0].startswith(f"broke a stale lease on {registered_model_name(params)}")
    assert ("expired at" if kind == "expired" else "is gone") in lines[0]


HOLDER = """
import sys, time
from pathlib import Path
from flows import locks
from flows.settings import load
root = Path(sys.argv[1])
with locks.hold(root, load(root), "unlearn run"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_killed_holder_leaves_nothing_that_blocks_the_next_run(project):
    root, params = project
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.Busy, match=f"pid {holder.pid} on host"):
            with locks.hold(root, params, "unlearn run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    lines: list[str] = []
    t0 = time.monotonic()
    with locks.hold(root, params, "unlearn run", say=lines.append):  # the flock died with it; its ticket is stale
        assert time.monotonic() - t0 < 10  # no waiting for an expiry (TTL_S is 120 s)
    assert len(lines) == 1 and f"pid {holder.pid} is gone" in lines[0]


def _run(client, exp_id: str, tags: dict[str, str]) -> str:
    return client.create_run(exp_id, tags=tags).info.run_id


def test_runs_left_running_by_dead_processes_are_killed_with_a_note(project):
    from flows.tracking import setup_mlflow

    root, params = project
    model = registered_model_name(params)
    exp_id = setup_mlflow(root, params)
    client = _client()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    runs = {
        "dead pid here": _run(client, exp_id, {"unlearn.owner.pid": str(gone.pid), "unlearn.owner.host": here}),
        "old lease": _run(client, exp_id, {"unlearn.owner.pid": "9", "unlearn.owner.host": "elsewhere",
                                           "unlearn.registered_model": model,
                                           "unlearn.owner.lease": f"{model}.lease/v999",
                                           "mlflow.note.content": "evaluate[finetune]"}),
        "other model elsewhere": _run(client, exp_id, {"unlearn.owner.pid": "9", "unlearn.owner.host": "elsewhere",
                                                       "unlearn.registered_model": "digits-cnn",
                                                       "unlearn.owner.lease": "digits-cnn.lease/v1"}),
        "no owner": _run(client, exp_id, {}),
        "ours": _run(client, exp_id, owner_tags(model)),
    }
    lines: list[str] = []
    with locks.hold(root, params, "unlearn run"):
        assert recovery.close_orphans(root, params, say=lines.append) == 2
    assert lines == ["recovery: marked 2 run(s) left RUNNING by dead processes as KILLED (see their note in MLflow)"]
    status = {k: client.get_run(v).info.status for k, v in runs.items()}
    assert status == {"dead pid here": "KILLED", "old lease": "KILLED", "other model elsewhere": "RUNNING",
                      "no owner": "RUNNING", "ours": "RUNNING"}
    note = client.get_run(runs["old lease"]).data.tags["mlflow.note.content"]
    assert note.startswith("evaluate[finetune]\n\nMarked KILLED at ") and "no longer holds the lease" in note
    assert "is gone" in client.get_run(runs["dead pid here"]).data.tags["unlearn.closed"]


def test_stage_runs_carry_their_owner(project):
    from flows.tracking import stage_run

    root, params = project
    with stage_run(root, params, "train_base", run_name="t", parent_run_id=None) as info:
        pass
    tags = _client().get_run(info.run_id).data.tags
    assert tags["unlearn.owner.pid"] == str(os.getpid()) and tags["unlearn.owner.host"] == socket.gethostname()
    assert tags["unlearn.registered_model"] == registered_model_name(params)


CHILD = """
import subprocess, sys, time
from flows.recovery import death_signal_preexec
child = subprocess.Popen(["sleep", "60"], preexec_fn=death_signal_preexec())
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_started_with_the_death_signal_dies_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while locks.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not locks.pid_alive(child)


def test_the_temporary_server_is_started_with_the_death_signal(monkeypatch):
    from prefect.server.api import server as prefect_server

    seen = {}

    class FakeSubprocess:
        @staticmethod
        def Popen(*args, **kwargs):  # noqa: N802
            seen.update(kwargs)
            return "process"

    monkeypatch.setattr(prefect_server, "subprocess", FakeSubprocess)
    monkeypatch.setattr(prefect_server.SubprocessASGIServer, "_run_uvicorn_command",
                        prefect_server.SubprocessASGIServer._run_uvicorn_command)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    recovery.tie_temporary_server()
    recovery.tie_temporary_server()  # idempotent
    try:
        assert prefect_server.SubprocessASGIServer(port=1)._run_uvicorn_command() == "process"
    finally:
        prefect_server.SubprocessASGIServer._instances.pop(1, None)
    assert callable(seen.get("preexec_fn")) and prefect_server.subprocess is FakeSubprocess


FIRST_TOUCH = """
import sys
from pathlib import Path
from flows.settings import load
from flows.tracking import setup_mlflow
setup_mlflow(Path(sys.argv[1]), load(Path(sys.argv[1])))
"""


@pytest.mark.slow  # two processes create and migrate a new sqlite store: 15-30 s here
def test_two_processes_on_one_new_sqlite_store_both_start(tmp_path):
    (tmp_path / "params.yaml").write_text("data: {name: digits}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}",
           "UNLEARN_MLFLOW_TEMPLATE": str(tmp_path / "none.db")}  # MLflow migrates: the race the flock prevents
    (tmp_path / "shared").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_TOUCH, str(tmp_path)], cwd=REPO, env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.splitlines()[-1:]  # without the flock: 'duplicate column name: step'


def test_the_lock_never_creates_a_missing_project_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="--root: no such project folder: .*typo"):
        locks.ProjectLock(tmp_path / "typo").try_acquire(locks.Owner.me("unlearn run"))
    assert not (tmp_path / "typo").exists()
