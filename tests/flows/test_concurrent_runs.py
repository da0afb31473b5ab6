"""`unlearn run` against `unlearn run`, as separate processes on a tiny project: two runs in one folder,
two clones sharing one tracking store, a run killed with SIGKILL (its Prefect server and RUNNING runs).

Each test runs the whole pipeline two or three times in subprocesses (30-90 s each on 2 busy cores): slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flowtest_utils import make_project, new_store

pytestmark = pytest.mark.slow


def _start(root: Path, uri: str, *extra: str) -> subprocess.Popen:
    """`unlearn run` in `root`; its output goes to files (a pipe would stay open in an orphaned server)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("PREFECT_API_URL", None)
    log = root.parent / f"{root.name}-{time.monotonic_ns()}.err"
    with open(log, "w") as err, open(log.with_suffix(".out"), "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--root", str(root), *extra], cwd=root,
                                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, proc.log.read_text()


def _error_line(err: str) -> str:
    return [line for line in err.splitlines() if line.startswith("error: ")][-1]


def _runs(uri: str, status: str | None = None):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("unlearning")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if status is None or r.info.status == status]


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _holds_lock(root: Path, pid: int) -> bool:
    try:
        return f'"pid": {pid},' in (root / ".unlearn" / "lock").read_text()
    except OSError:
        return False


def test_a_second_run_in_one_folder_is_refused_at_once_and_one_with_wait_waits(tmp_path, mlflow_template):
    root = make_project(tmp_path / "project")
    uri = new_store(mlflow_template, root)
    runs = [_start(root, uri)]
    time.sleep(0.5)
    runs.append(_start(root, uri))
    _until(lambda: any(_holds_lock(root, r.pid) for r in runs), 120, "one run to take the project lock")
    winner, loser = runs if _holds_lock(root, runs[0].pid) else runs[::-1]  # on a busy machine either may
    waiting = _start(root, uri, "--wait")
    t0 = time.monotonic()
    rc, err = _finish(loser, timeout=120)
    assert rc == 1 and time.monotonic() - t0 < 60, err
    line = _error_line(err)
    assert line.startswith(f"error: another unlearn run (pid {winner.pid} on host ") and \
        "holds the project lock" in line and line.endswith("; use --wait to wait for it"), line
    assert "Traceback" not in err
    assert _finish(winner)[0] == 0
    rc, err = _finish(waiting)
    assert rc == 0, err
    assert f"waiting for unlearn run (pid {winner.pid} on host " in err
    parents = [r for r in _runs(uri) if r.data.tags.get("pipeline.stage") == "pipeline"]
    assert len(parents) == 2 and not _runs(uri, "RUNNING")


def _parents(uri: str):
    return sorted((r for r in _runs(uri) if r.data.tags.get("pipeline.stage") == "pipeline"),
                  key=lambda r: r.info.start_time)


def test_two_clones_sharing_one_store_are_serialised_by_the_lease(tmp_path, mlflow_template, monkeypatch):
    from flows.locks import hold
    from flows.settings import load

    a, b, c = (make_project(tmp_path / name) for name in "abc")
    uri = new_store(mlflow_template, tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with hold(a, load(a), "unlearn promote 3"):  # clone a holds the lease of digits-mlp
        rc, err = _finish(_start(b, uri), timeout=120)
        assert rc == 1
        line = _error_line(err)
        assert line.startswith(f"error: another unlearn promote 3 (pid {os.getpid()} on host ") and \
            "holds the lease of registered model digits-mlp; use --wait" in line, line
        first = _start(b, uri, "--wait")
        _until(lambda: "waiting for" in first.log.read_text(), 120, "clone b to wait")
        second = _start(c, uri, "--wait")
        _until(lambda: "waiting for" in second.log.read_text(), 120, "clone c to wait")
    rc, err = _finish(first)
    assert rc == 0, err
    assert "waiting for unlearn promote 3" in err and "the lease of registered model digits-mlp" in err
    rc, err = _finish(second)
    assert rc == 0, err
    assert f"waiting for unlearn run (pid {first.pid} on host " in err  # c queued behind b, b behind a
    parents = _parents(uri)
    assert len(parents) == 2 and parents[1].info.start_time > parents[0].info.end_time  # one after the other
    assert parents[0].data.tags["unlearn.owner.pid"] == str(first.pid)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _server_of(pid: int) -> tuple[int, str] | None:
    """The temporary Prefect server started by process `pid` (its pid and health URL), once it answers."""
    for child in _children(pid):
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "flows.temp_server" in args:  # `unlearn run`'s early server (flows/temp_server.py): its port last
            port = args[args.index("flows.temp_server") + 1]
        elif "uvicorn" in args and "--port" in args:  # Prefect's own start (the fallback)
            port = args[args.index("--port") + 1]
        else:
            continue
        url = f"http://127.0.0.1:{port}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return child, url
        except OSError:
            return None
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux only")
def test_after_a_sigkill_the_server_dies_and_the_next_run_closes_the_orphaned_runs(tmp_path, mlflow_template):
    from flows.locks import pid_alive

    root = make_project(tmp_path / "project")
    uri = new_store(mlflow_template, root)
    run = _start(root, uri)
    found: list = []
    _until(lambda: found.append(_server_of(run.pid)) or found[-1], 180, "the temporary Prefect server")
    server, url = found[-1]
    _until(lambda: any(r.data.tags.get("pipeline.stage") != "pipeline" for r in _runs(uri, "RUNNING")), 300,
           "a stage run")
    run.send_signal(signal.SIGKILL)
    run.wait()
    t0 = time.monotonic()
    _until(lambda: not pid_alive(server), 30, "the orphaned Prefect server to exit")
    print(f"server exited {time.monotonic() - t0:.1f} s after its parent's SIGKILL")
    orphans = {r.info.run_id for r in _runs(uri, "RUNNING")}
    assert len(orphans) >= 2  # the parent run and at least one stage run
    rc, err = _finish(_start(root, uri))
    assert rc == 0, err
    assert f"recovery: marked {len(orphans)} run(s) left RUNNING by dead processes as KILLED" in err
    assert not _runs(uri, "RUNNING")
    killed = {r.info.run_id: r for r in _runs(uri, "KILLED")}
    assert set(killed) == orphans
    assert all("Marked KILLED at" in r.data.tags["mlflow.note.content"] for r in killed.values())
