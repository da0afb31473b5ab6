"""The services of the local stack, each started and checked ready: a throw-away PostgreSQL cluster, the
MLflow server on it, a Dask scheduler and its workers (flows/stack.py puts them together).

PostgreSQL's `initdb` refuses to run as root: as root, the cluster's folder is given to the `postgres`
system user and its commands run as that user (`runuser`, else `setpriv`). The password reaches the
MLflow server as `PGPASSWORD` in its environment, never on a command line (`ps` shows those) nor in a URI
that MLflow could log.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .stack_procs import (
    StackError,
    alive,
    free_port,
    http_ok,
    port_open,
    spawn,
    start_time,
    stop,
    wait_ready,
    wait_until,
)

HOST = "127.0.0.1"
PG_USER = PG_DB = "mlflow"
INSTALL_PG = "install it with `apt-get install postgresql`"


def pg_bin() -> Path:
    """The folder of `initdb` and `pg_ctl`: UNLEARN_PG_BIN, else Debian's newest, else PATH."""
    tried = [os.environ.get("UNLEARN_PG_BIN")] if os.environ.get("UNLEARN_PG_BIN") else \
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    which = shutil.which("initdb")
    tried += [str(Path(which).parent)] if which and "UNLEARN_PG_BIN" not in os.environ else []
    for folder in tried:
        if all((Path(folder) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise StackError("postgresql", f"server programs (initdb, pg_ctl) not found in {tried or 'PATH'}: {INSTALL_PG}")


def _pg_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: `postgres` when we are root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("postgresql", f"running as root needs the 'postgres' system user: {INSTALL_PG}") from None


def check_postgres(stack: Path) -> None:
    """Refuse before any side effect: no binaries, or (as root) a folder the postgres user cannot reach."""
    pg_bin()
    if _pg_user() is None:
        return
    for parent in [p for p in stack.resolve().parents if p.exists()]:
        if not parent.stat().st_mode & 0o001:
            raise StackError("postgresql", f"the postgres user cannot enter {parent} (no o+x): make it searchable "
                             "or bring the stack up in another folder (--dir)")


def _as_pg(cmd: list[str]) -> list[str]:
    user = _pg_user()
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--", *cmd]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *cmd]


def _give_to_pg(*paths: Path) -> None:
    user = _pg_user()
    for path in paths if user is not None else ():
        for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.chown(p, user.pw_uid, user.pw_gid)


def _run_pg(cmd: list[str], log: Path, timeout: float) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(_as_pg(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, start_new_session=True)
    if done.returncode != 0:
        raise StackError("postgresql", f"{Path(cmd[0]).name} failed (exit {done.returncode})", log)


def start_postgres(stack: Path, password: str, logs: Path, started: list[dict[str, Any]]) -> dict[str, Any]:
    """initdb in `.stack/pg` (role `mlflow`, the password), listen on 127.0.0.1 only, database `mlflow`.

    Each start function appends its process to `started` as soon as it runs, so a failure later can stop it.
    """
    bin_, data, log = pg_bin(), stack / "pg", logs / "postgres.log"
    port = free_port(HOST)
    data.mkdir(mode=0o700)
    log.touch()
    pwfile = stack / ".pg-password"  # read once by initdb, then removed
    pwfile.touch(mode=0o600)
    pwfile.write_text(password + "\n")
    _give_to_pg(data, log, pwfile)
    try:
        _run_pg([str(bin_ / "initdb"), "-D", str(data), f"--username={PG_USER}", f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"], log, timeout=180)
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as conf:  # TCP on loopback only, no Unix socket in /var/run
        conf.write(f"\nlisten_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = ''\n")
    rec = {"name": "postgresql", "log": str(log), "group": False, "port": port, "data": str(data), "bin": str(bin_)}
    try:
        _run_pg([str(bin_ / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "120"], log, 150)
    finally:
        if (data / "postmaster.pid").exists():  # also when pg_ctl gave up waiting: the server may be up
            rec["pid"] = int((data / "postmaster.pid").read_text().split()[0])
            rec["started"] = start_time(rec["pid"])
            started.append(rec)
    _create_database(port, password, log)
    return rec


def _create_database(port: int, password: str, log: Path) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(host=HOST, port=port, user=PG_USER, password=password, dbname="postgres")
    except psycopg2.Error as err:
        raise StackError("postgresql", f"cannot connect as {PG_USER}: {str(err).strip().splitlines()[0]}", log) \
            from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")
    finally:
        conn.close()


def stop_postgres(rec: dict[str, Any]) -> None:
    """`pg_ctl stop -m fast`; the postmaster is killed if it is still there after that."""
    if alive(rec):
        ctl = [str(Path(rec["bin"]) / "pg_ctl"), "stop", "-D", rec["data"], "-m", "fast", "-w", "-t", "30"]
        try:
            _run_pg(ctl, Path(rec["log"]), timeout=40)
        except (StackError, subprocess.TimeoutExpired):
            pass
    stop(rec)


def service_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment, quiet (flows.settings.QUIET_ENV), with `extra`; no stale MLflow / Dask settings."""
    from .settings import QUIET_ENV

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PGPASSWORD")}
    return {**QUIET_ENV, **env, **extra}


def start_mlflow(stack: Path, pg: dict[str, Any], password: str, logs: Path, timeout: float,
                 started: list[dict[str, Any]]) -> dict[str, Any]:
    """`mlflow server` on the PostgreSQL store, artifacts served from `.stack/artifacts`; waits for /health.

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: MLflow 3.17 otherwise starts a huey job runner (about ten
    processes) for GenAI jobs this pipeline never submits.
    """
    port = free_port(HOST)
    (stack / "artifacts").mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           f"postgresql://{PG_USER}@{HOST}:{pg['port']}/{PG_DB}", "--artifacts-destination", str(stack / "artifacts"),
           "--serve-artifacts", "--host", HOST, "--port", str(port), "--workers", "1"]
    env = service_env({"PGPASSWORD": password, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    rec = {**spawn("mlflow", cmd, logs / "mlflow.log", cwd=stack, env=env), "port": port}
    rec["url"] = f"http://{HOST}:{port}"
    started.append(rec)
    wait_ready("mlflow", rec, lambda: http_ok(f"{rec['url']}/health"), timeout)
    return rec


def start_prefect(stack: Path, logs: Path, timeout: float, started: list[dict[str, Any]]) -> dict[str, Any]:
    """`prefect server start` on 127.0.0.1:<free port> (its own PREFECT_HOME in .stack/prefect), no UI.

    Tasks on Dask workers report their runs to a Prefect API. Without one in their environment, each worker
    process started a temporary server of its own (flows/runner.py: 118 s to the first task).
    """
    port = free_port(HOST)
    home = stack / "prefect"
    home.mkdir()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    env = service_env({"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    env.pop("PREFECT_API_URL", None)  # this is the API
    rec = {**spawn("prefect", cmd, logs / "prefect.log", cwd=stack, env=env), "port": port}
    rec["url"] = f"http://{HOST}:{port}/api"
    started.append(rec)
    wait_ready("prefect", rec, lambda: http_ok(f"{rec['url']}/health"), timeout)
    return rec


def start_scheduler(stack: Path, env: dict[str, str], logs: Path, timeout: float,
                    started: list[dict[str, Any]]) -> dict[str, Any]:
    """`dask scheduler` on 127.0.0.1:<free port>, no dashboard (bokeh is not installed)."""
    port = free_port(HOST)
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", HOST, "--port", str(port),
           "--no-dashboard"]
    rec = {**spawn("dask-scheduler", cmd, logs / "dask-scheduler.log", cwd=stack, env=service_env(env)),
           "port": port, "address": f"tcp://{HOST}:{port}"}
    started.append(rec)
    wait_ready("dask-scheduler", rec, lambda: port_open(port), timeout)
    return rec


def start_worker(stack: Path, i: int, address: str, resources: dict[str, float], env: dict[str, str],
                 logs: Path, started: list[dict[str, Any]]) -> dict[str, Any]:
    """`dask worker` `worker-<i>`: one process, one thread, its own empty working folder as cwd.

    Dask's scratch space (`--local-directory`) is `.stack/scratch-<i>`, beside the working folder rather
    than in it, so the working folder holds only what the worker's tasks put there.
    """
    name, cwd, scratch = f"worker-{i}", stack / f"worker-{i}", stack / f"scratch-{i}"
    cwd.mkdir()
    scratch.mkdir()
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name, "--nworkers", "1",
           "--nthreads", "1", "--local-directory", str(scratch), "--host", HOST, "--no-dashboard"]
    if resources:
        cmd += ["--resources", " ".join(f"{k}={v:g}" for k, v in resources.items())]
    rec = {**spawn(name, cmd, logs / f"{name}.log", cwd=cwd, env=service_env(env)), "cwd": str(cwd)}
    started.append(rec)
    return rec


def wait_workers(address: str, workers: list[dict[str, Any]], timeout: float) -> None:
    """Wait until the scheduler lists every worker by name; a worker that exits first fails at once."""
    from distributed import Client

    names = {w["name"] for w in workers}
    with Client(address, timeout=30) as client:
        def registered() -> bool:
            for w in workers:
                if not alive(w):
                    raise StackError(w["name"], "exited while starting", Path(w["log"]))
            seen = {info.get("name") for info in client.scheduler_info()["workers"].values()}
            return names <= seen

        if not wait_until(registered, timeout, every=0.5):
            late = sorted(names - {i.get("name") for i in client.scheduler_info()["workers"].values()})
            raise StackError(late[0], f"not registered with the scheduler after {timeout:.0f} s",
                             Path(next(w["log"] for w in workers if w["name"] == late[0])))
