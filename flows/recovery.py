"""Crash hygiene: close the MLflow runs a dead process left RUNNING; tie Prefect's temporary server to us.

`close_orphans` runs in the flow body right after `flows.locks.hold`. Every run this pipeline creates
carries its owner (`flows.tracking.owner_tags`: pid, host, the lease ticket it held, its registered model),
so a RUNNING run is known dead when its pid is gone on this host, or when it belongs to our registered
model and was created under a lease ticket that is not ours: we hold the lease, so its holder is gone.
Runs without owner tags (created before these tags existed) are left alone.

`tie_temporary_server`: with no `PREFECT_API_URL`, Prefect starts a uvicorn server in a subprocess
(`prefect.server.api.server.SubprocessASGIServer`) and stops it at exit; a SIGKILL of the parent left
it orphaned and listening. Here its Popen gets `prctl(PR_SET_PDEATHSIG, SIGTERM)` (Linux), so the kernel
sends it SIGTERM when we die however we die. Start-up is unchanged (same command): a `preexec_fn` only
costs a plain fork instead of vfork, ~40 ms in a process with torch and mlflow loaded (measured), against
5-17 s of server start-up.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import locks
from .tracking import lease_id, setup_mlflow

NOTE = "mlflow.note.content"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _dead_reason(tags: dict[str, str], model: str) -> str | None:
    """Why the process that created a RUNNING run with these tags is gone, or None if it may be alive."""
    pid, host = tags.get("unlearn.owner.pid"), tags.get("unlearn.owner.host")
    if not pid or not pid.isdigit():
        return None
    who = f"pid {pid} on host {host}"
    if host == socket.gethostname():
        if int(pid) == os.getpid():
            return None
        if not locks.pid_alive(int(pid)):
            return f"its process ({who}) is gone"
    ticket = tags.get("unlearn.owner.lease")
    mine = lease_id(model)
    if tags.get("unlearn.registered_model") == model and ticket and mine and ticket != mine:
        return f"its process ({who}) no longer holds the lease of {model} ({ticket}; we hold {mine})"
    return None


def close_orphans(root: Path, params: Any, say: Callable[[str], None] | None = None) -> int:
    """Mark the runs of this experiment left RUNNING by dead processes KILLED, with a note; returns how many.

    Args:
        root: the project folder.
        params: the validated params (tracking store, experiment, registered model).
        say: where the one-line report goes when runs were closed (stderr).
    """
    import mlflow

    from .settings import registered_model_name

    exp_id = setup_mlflow(root, params)
    client = mlflow.MlflowClient()
    model = registered_model_name(params)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    me = f"pid {os.getpid()} on host {socket.gethostname()}"
    closed = 0
    for run in client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'", max_results=5000):
        reason = _dead_reason(run.data.tags, model)
        if reason is None:
            continue
        _mark_killed(client, run, f"Marked KILLED at {now} by the next run ({me}): {reason}.", f"{now}: {reason}")
        closed += 1
    if closed:
        (say or _stderr)(f"recovery: marked {closed} run(s) left RUNNING by dead processes as KILLED "
                         "(see their note in MLflow)")
    return closed


def close_lost_attempts(parent_run_id: str, say: Callable[[str], None] | None = None) -> int:
    """Mark KILLED the stage runs of this pipeline run still RUNNING once every stage is done; returns how many.

    On Dask these are attempts whose worker was lost mid-stage: Dask ran the stage again on another worker
    (its run is the FINISHED one of the same name), and the lost one would stay RUNNING until a later run's
    `close_orphans`.
    """
    import mlflow

    client = mlflow.MlflowClient()
    exp_id = client.get_run(parent_run_id).info.experiment_id
    lost = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                                                     "and attributes.status = 'RUNNING'", max_results=1000)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    for run in lost:
        reason = (f"its worker ({run.data.tags.get('worker', '?')}) was lost mid-stage; the stage ran again on "
                  "another worker")
        _mark_killed(client, run, f"Marked KILLED at {now} by the pipeline run that owns it: {reason}.",
                     f"{now}: {reason}")
    if lost:
        (say or _stderr)(f"recovery: marked {len(lost)} stage run(s) of lost attempts as KILLED")
    return len(lost)


def _mark_killed(client: Any, run: Any, note: str, closed: str) -> None:
    """End `run` as KILLED: `note` appended to its MLflow note, `closed` as its `unlearn.closed` tag."""
    old = run.data.tags.get(NOTE)
    client.set_tag(run.info.run_id, NOTE, f"{old}\n\n{note}" if old else note)
    client.set_tag(run.info.run_id, "unlearn.closed", closed)
    client.set_terminated(run.info.run_id, "KILLED")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _DeathSignalPopen:
    """Stands in for the `subprocess` module inside prefect's server module while it starts the server."""

    def __init__(self, real: Any, preexec: Callable[[], None]) -> None:
        self._real, self._preexec = real, preexec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the name it replaces
        kwargs.setdefault("preexec_fn", self._preexec)
        return self._real.Popen(*args, **kwargs)


def death_signal_preexec() -> Callable[[], None] | None:
    """A Popen `preexec_fn` that makes the child get SIGTERM when this thread's process dies (Linux only).

    The kernel sends the signal when the *thread* that forked the child ends, so it is only set from the
    main thread (which lives as long as the process); elsewhere this returns None.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    parent = os.getpid()
    return lambda: die_with_parent(parent, prctl)


def die_with_parent(parent: int, prctl: Callable[..., int] | None = None) -> None:
    """In a child of `parent`: get SIGTERM when the thread that started it dies (Linux only; a Popen's
    `preexec_fn` passes `prctl` resolved before the fork, a spawned process resolves it itself)."""
    if not sys.platform.startswith("linux"):
        return
    if prctl is None:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def held_run(root: Path, params: Any, wait: bool = False, tie: bool = True) -> Iterator[None]:
    """What `unlearn run` wraps the flow in: a temporary server tied to us, the project lock and the lease.

    Taken here, a second run is refused before it waits for Prefect's server (5-17 s); the flow body takes
    the same locks again (for free in this process, for real in a scheduled run). `tie=False`: the caller
    starts the server itself (`flows.temp_server`, which ties Prefect's own start only when it falls back).
    """
    if tie:
        tie_temporary_server()
    with locks.hold(root, params, "unlearn run", wait=wait):
        yield


def tie_temporary_server() -> None:
    """Make the temporary Prefect server that this process may start die with it (idempotent)."""
    if os.environ.get("PREFECT_API_URL"):
        return  # a real server: nothing is started here
    from prefect.server.api import server as prefect_server

    cls = prefect_server.SubprocessASGIServer
    original = cls._run_uvicorn_command
    if getattr(original, "_tied", False):
        return

    def run_uvicorn_command(self: Any) -> Any:
        preexec = death_signal_preexec()
        if preexec is None:
            return original(self)
        real = prefect_server.subprocess
        prefect_server.subprocess = _DeathSignalPopen(real, preexec)
        try:
            return original(self)
        finally:
            prefect_server.subprocess = real

    run_uvicorn_command._tied = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_uvicorn_command
