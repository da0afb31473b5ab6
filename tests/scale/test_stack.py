"""The local stack itself (`python -m flows.stack up|down`), on loopback: PostgreSQL takes the credentials
it wrote, the MLflow server stores runs there and serves artifacts to a client that has nothing but the
URI, the Dask scheduler has exactly the two named workers, each in its own empty folder, and `down` leaves
no process, no open port and no `.stack/`. A start that fails half-way stops what it started and names the
failing service's log. Run with `.venv/bin/python -m pytest -m scale tests/scale`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from flows.settings import QUIET_ENV
from flows.stack_procs import alive, group_members, port_open

pytestmark = pytest.mark.scale
REPO = Path(__file__).resolve().parents[2]
CLIENT = """
import json, os, pathlib, sys, mlflow
mlflow.set_experiment("stack-check")
with mlflow.start_run() as run:
    mlflow.log_metric("forget_acc", 0.25)
    pathlib.Path(sys.argv[1], "note.txt").write_text("through the server")
    mlflow.log_artifact(os.path.join(sys.argv[1], "note.txt"))
client = mlflow.MlflowClient()
back = client.download_artifacts(run.info.run_id, "note.txt", sys.argv[2])
print(json.dumps({"metric": client.get_run(run.info.run_id).data.metrics["forget_acc"],
                  "artifact": pathlib.Path(back).read_text(), "artifact_uri": run.info.artifact_uri}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "UNLEARN_DASK_ADDRESS", "UNLEARN_DVC_REMOTE", "UNLEARN_PG_PASSWORD")}
    return {**env, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "true", **extra}


def _stack(command: str, project: Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.stack", command, "--dir", str(project)], cwd=REPO,
                          env=env or _env(), capture_output=True, text=True, timeout=420)
    return done, time.monotonic() - t0


@pytest.fixture
def project():
    """A folder the `postgres` system user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="unlearn-stack-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    if (folder / ".stack" / "state.json").exists():
        _stack("down", folder)
    shutil.rmtree(folder, ignore_errors=True)


def _read(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def _cmdlines(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return "\n".join(out)


def test_stack_up_serves_and_down_leaves_nothing(project, tmp_path):
    up, up_s = _stack("up", project)
    assert up.returncode == 0, up.stderr
    stack = project / ".stack"
    env, creds = _read(stack / "env"), _read(stack / "credentials")
    state = json.loads((stack / "state.json").read_text())
    password = creds["PGPASSWORD"]
    assert oct((stack / "credentials").stat().st_mode & 0o777) == "0o600"

    import psycopg2

    with psycopg2.connect(host=creds["PGHOST"], port=int(creds["PGPORT"]), user=creds["PGUSER"],
                          password=password, dbname=creds["PGDATABASE"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM experiments")  # MLflow's schema, migrated by the server
        assert cur.fetchone()[0] >= 1
    with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as resp:
        assert resp.read().decode().strip() == "OK"

    # A client with nothing but the URI (a password in it, as a careless user might write), in an empty folder.
    client_dir, download = tmp_path / "client", tmp_path / "download"
    client_dir.mkdir()
    download.mkdir()
    uri = env["MLFLOW_TRACKING_URI"].replace("http://", f"http://mlflow:{password}@")
    ran = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path), str(download)], cwd=client_dir,
                         env={**QUIET_ENV, **_env(MLFLOW_TRACKING_URI=uri)}, capture_output=True, text=True,
                         timeout=180)  # QUIET_ENV as the pipeline's entry points set it (flows.settings.quiet_env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["metric"] == 0.25 and got["artifact"] == "through the server"
    assert got["artifact_uri"].startswith("mlflow-artifacts:")
    assert list(client_dir.iterdir()) == []  # no local store, no mlruns/: everything went through the server
    assert [p.name for p in (stack / "artifacts").rglob("note.txt")] == ["note.txt"]
    status = subprocess.run([str(Path(sys.executable).parent / "unlearn"), "status", "--root", str(REPO)], cwd=client_dir,
                            env=_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, timeout=180)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "mlflow:***@127.0.0.1" in status.stdout

    from distributed import Client

    with Client(env["UNLEARN_DASK_ADDRESS"], timeout=30) as client:
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names == ["worker-1", "worker-2"]
        cwds = client.run(os.getcwd)
        listed = client.run(lambda: sorted(os.listdir(".")))
        seen_env = client.run(lambda: (os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("UNLEARN_DVC_REMOTE")))
    assert sorted(cwds.values()) == [str(stack / "worker-1"), str(stack / "worker-2")]
    assert all(files == [] for files in listed.values()), listed
    assert set(seen_env.values()) == {(env["MLFLOW_TRACKING_URI"], env["UNLEARN_DVC_REMOTE"])}

    again, _ = _stack("up", project)
    assert again.returncode == 0 and "already up" in again.stdout
    status_ok, _ = _stack("status", project)
    assert status_ok.returncode == 0 and status_ok.stdout.count("running") == 6

    # The password: in no log, no env file, no state, no command line, no output of ours.
    pids = [p["pid"] for p in state["procs"]] + [m for p in state["procs"] for m in group_members(p["pid"])]
    texts = [f.read_text(errors="replace") for f in (stack / "logs").iterdir()]
    texts += [(stack / "env").read_text(), (stack / "state.json").read_text(), _cmdlines(pids),
              up.stdout, up.stderr, ran.stdout, ran.stderr, status.stdout, status.stderr]
    assert not [t[:200] for t in texts if password in t]

    down, down_s = _stack("down", project)
    assert down.returncode == 0, down.stderr
    assert not [p["name"] for p in state["procs"] if alive(p) or group_members(p["pid"])]
    ports = [int(creds["PGPORT"]), int(env["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1]),
             int(env["UNLEARN_DASK_ADDRESS"].rsplit(":", 1)[1])]
    assert not [p for p in ports if port_open(p)]
    assert not stack.exists()
    print(f"\nstack up {up_s:.1f} s (its own count: {state.get('up_seconds')} s), down {down_s:.1f} s")


def test_a_failed_start_stops_what_started_and_names_the_log(project, tmp_path):
    broken = tmp_path / "broken"  # an `mlflow` that cannot start: the server fails after PostgreSQL is up
    (broken / "mlflow").mkdir(parents=True)
    (broken / "mlflow" / "__init__.py").write_text("raise ImportError('mlflow broken on purpose')\n")
    (broken / "mlflow" / "__main__.py").write_text("")
    up, _ = _stack("up", project, _env(PYTHONPATH=str(broken)))
    assert up.returncode == 1
    err = up.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stack up failed: mlflow: exited while starting"), up.stderr
    log = project / ".stack" / "logs" / "mlflow.log"
    assert str(log) in err[0] and "broken on purpose" in log.read_text()
    assert sorted(p.name for p in (project / ".stack").iterdir()) == ["logs"]  # the cluster is gone
    left = subprocess.run(["pgrep", "-f", str(project / ".stack")], capture_output=True, text=True)
    assert left.stdout == "", left.stdout

    status, _ = _stack("status", project)
    assert status.returncode == 1 and "failed start" in status.stdout
