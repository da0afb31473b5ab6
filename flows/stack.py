"""The local distributed stack, up and down with one command: `python -m flows.stack up|down|status`.

What a platform runs as servers, on loopback: PostgreSQL (a throw-away cluster), the MLflow server on it
with artifacts served through it, a Dask scheduler and its workers (separate processes, separate empty
working folders), and a folder standing in for the DVC remote. Everything lives in `.stack/` of the
project (git- and DVC-ignored); `down` stops what `up` started and removes it. Ports are picked free at
start, so two clones on one machine do not collide. `.stack/env` points the pipeline at it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .stack_procs import StackError, alive, stop

STACK_DIR = ".stack"
PASSWORD_ENV = "UNLEARN_PG_PASSWORD"
READY_TIMEOUT = 240.0  # MLflow's first start migrates the database: 30-60 s on the loaded 2-core machine


def stack_dir(root: Path) -> Path:
    return root / STACK_DIR


def write_env(path: Path, values: dict[str, str]) -> None:
    """KEY=VALUE lines that `set -a; . .stack/env; set +a` exports (values are paths and URLs, no secrets)."""
    for key, value in values.items():
        if not key.isidentifier() or any(c in value for c in "\n'\"$` \\"):
            raise ValueError(f"cannot write {key}={value!r} to {path.name}: not a plain shell word")
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def write_credentials(path: Path, values: dict[str, str]) -> None:
    """The connection to PostgreSQL in libpq's variables (PGHOST, PGPASSWORD...), mode 600 from the start."""
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    write_env(path, values)


def _load_state(root: Path) -> dict[str, Any] | None:
    path = stack_dir(root) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _save_state(root: Path, state: dict[str, Any]) -> None:
    path = stack_dir(root) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def _settings(root: Path) -> tuple[int, dict[str, float]]:
    """(workers, resources) of `orchestration` in params.yaml; 2 workers and none without one."""
    if not (root / "params.yaml").exists():
        return 2, {}
    from unlearning.params import ConfigError

    from .settings import load

    try:
        orch = load(root, methods=False).orchestration
    except ConfigError as err:
        raise StackError("params.yaml", str(err)) from None
    return orch.workers, dict(orch.resources)


def _say(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:5.1f} s] {text}", flush=True)


def up(root: Path) -> int:
    """Start every service (or say it is up already); on a failure, stop what started and name the log."""
    from . import stack_services as S

    stack = stack_dir(root)
    state = _load_state(root)
    if state is not None and all(alive(p) for p in state["procs"]):
        print("stack already up")
        _print_env(root)
        return 0
    if state is not None:
        print("a stack that is only partly running was found: taking it down first")
        down(root, quiet=True)
    workers, resources = _settings(root)
    S.check_postgres(stack)  # refuses here, before anything exists
    if "\n" in os.environ.get(PASSWORD_ENV, ""):
        raise StackError("postgresql", f"{PASSWORD_ENV} must be one line")
    shutil.rmtree(stack, ignore_errors=True)  # what a failed `up` left: its logs
    logs = stack / "logs"
    logs.mkdir(parents=True)
    (stack / ".gitignore").write_text("*\n")
    password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(24)
    state = {"procs": [], "started_at": time.time()}
    t0 = time.monotonic()
    print(f"bringing the stack up in {stack} (about 30-90 s on 2 busy cores)", flush=True)
    try:
        _say(t0, "postgresql: initdb and start")
        pg = S.start_postgres(stack, password, logs, state["procs"])
        _save_state(root, state)
        write_credentials(stack / "credentials", {
            "PGHOST": S.HOST, "PGPORT": str(pg["port"]), "PGUSER": S.PG_USER, "PGDATABASE": S.PG_DB,
            **({} if os.environ.get(PASSWORD_ENV) else {"PGPASSWORD": password})})
        _say(t0, f"mlflow: server on postgresql://{S.PG_USER}@{S.HOST}:{pg['port']}/{S.PG_DB}, waiting for /health")
        mlflow = S.start_mlflow(stack, pg, password, logs, READY_TIMEOUT, state["procs"])
        _save_state(root, state)
        remote = stack / "dvc-remote"
        remote.mkdir()
        _say(t0, "prefect: server (the API the workers' task runs report to)")
        prefect = S.start_prefect(stack, logs, READY_TIMEOUT, state["procs"])
        _save_state(root, state)
        env = {"MLFLOW_TRACKING_URI": mlflow["url"], "UNLEARN_DVC_REMOTE": str(remote),
               "PREFECT_API_URL": prefect["url"]}
        _say(t0, "dask: scheduler")
        sched = S.start_scheduler(stack, env, logs, READY_TIMEOUT, state["procs"])
        _save_state(root, state)
        _say(t0, f"dask: {workers} workers")
        procs = [S.start_worker(stack, i, sched["address"], resources, env, logs, state["procs"])
                 for i in range(1, workers + 1)]
        _save_state(root, state)
        S.wait_workers(sched["address"], procs, READY_TIMEOUT)
    except BaseException as err:  # noqa: BLE001 - whatever stopped it (Ctrl-C too), nothing is left running
        _teardown(state["procs"])
        for path in stack.iterdir():  # the logs stay, for the message below; the next `up` clears them
            if path.name != "logs":
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        if not isinstance(err, Exception):
            raise
        why = str(err) if isinstance(err, StackError) else f"{type(err).__name__}: {err}"
        print(f"stack up failed: {why}", file=sys.stderr)
        return 1
    state["up_seconds"] = round(time.monotonic() - t0, 1)
    _save_state(root, state)
    write_env(stack / "env", {**env, "UNLEARN_DASK_ADDRESS": sched["address"]})
    _say(t0, "stack up")
    _print_env(root)
    return 0


def _teardown(procs: list[dict[str, Any]]) -> list[str]:
    """Stop services in reverse order of start; the names of those that had to be killed."""
    from .stack_services import stop_postgres

    killed = []
    for rec in reversed(procs):
        if rec["name"] == "postgresql":
            stop_postgres(rec)
        elif stop(rec):
            killed.append(rec["name"])
    return killed


def down(root: Path, quiet: bool = False) -> int:
    """Stop everything `up` started and remove `.stack/`."""
    stack = stack_dir(root)
    if not stack.exists():
        print("stack is not up (no .stack/)")
        return 0
    t0 = time.monotonic()
    state = _load_state(root) or {"procs": []}
    killed = _teardown(state["procs"])
    left = [p["name"] for p in state["procs"] if alive(p)]
    if left:
        print(f"stack down failed: still running: {', '.join(left)} ({stack} kept)", file=sys.stderr)
        return 1
    shutil.rmtree(stack)
    if not quiet:
        extra = f" (killed after the timeout: {', '.join(killed)})" if killed else ""
        print(f"stack down in {time.monotonic() - t0:.1f} s{extra}; {stack} removed")
    return 0


def status(root: Path) -> int:
    """One line per service: running or not, its address and log. Exit 0 only when all run."""
    state = _load_state(root)
    if state is None:
        print("stack is not up" + (" (a failed start left .stack/logs)" if stack_dir(root).exists() else ""))
        return 1
    for p in state["procs"]:
        where = p.get("url") or p.get("address") or (f"127.0.0.1:{p['port']}" if "port" in p else p.get("cwd", ""))
        print(f"{p['name']:<15} {'running' if alive(p) else 'STOPPED':<8} pid {p['pid']:<8} {where}  log {p['log']}")
    return 0 if all(alive(p) for p in state["procs"]) else 1


def _print_env(root: Path) -> None:
    stack = stack_dir(root)
    env = read_env(stack / "env") if (stack / "env").exists() else {}
    for key, value in env.items():
        print(f"  {key}={value}")
    print(f"  logs: {stack / 'logs'}/; PostgreSQL connection (libpq variables): {stack / 'credentials'}")
    print(f"Point the pipeline at it:\n  set -a; . {stack / 'env'}; set +a\n"
          "  unlearn run --set orchestration.task_runner=dask   (or task_runner: dask in params.yaml)\n"
          f"Take it down: python -m flows.stack down --dir {root}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.stack", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--dir", type=Path, default=Path("."), help="the project folder (.stack/ goes there)")
    args = p.parse_args(argv)
    root = args.dir.resolve()
    if not root.is_dir():
        print(f"stack: project folder not found: {root}", file=sys.stderr)
        return 2
    try:
        return {"up": up, "down": down, "status": status}[args.command](root)
    except StackError as err:  # refused before anything started (missing PostgreSQL, unreachable folder)
        print(f"stack {args.command} refused: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
