"""`unlearn serve`: the pipeline as a Prefect deployment on a cron schedule, against a real Prefect server.

Schedules need a real server (Prefect's temporary in-process server cannot schedule, STACK.md): the one
at `PREFECT_API_URL`, or one started here on 127.0.0.1 (and stopped again when serving ends). Each
scheduled run processes the pending deletion requests, exactly like `unlearn run`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .settings import QUIET_ENV

DEPLOYMENT = "scheduled"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(port: int | None = None, timeout_s: float = 180.0, log_file: Path | None = None):
    """Start `prefect server start` on 127.0.0.1; returns (api_url, process) once /api/health answers.

    The server gets SIGTERM when this process dies, even by SIGKILL (Linux: `PR_SET_PDEATHSIG`).
    """
    from .recovery import death_signal_preexec

    port = port or free_port()
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe)] if exe.exists() else [shutil.which("prefect") or "prefect"]
    env = {**os.environ, **QUIET_ENV}
    env.pop("PREFECT_API_URL", None)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd + ["server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=death_signal_preexec())
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode} before answering on {api}"
                               + (f" (log: {log_file})" if log_file else ""))
        if _healthy(api):
            return api, proc
        time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"prefect server did not answer on {api} within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen | None) -> None:
    """Stop a server started by `start_server` (SIGTERM, then SIGKILL after 20 s)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def deployments(api_url: str) -> list[dict[str, Any]]:
    """The deployments the server knows (name, schedules, parameters), read through its REST API."""
    req = urllib.request.Request(f"{api_url}/deployments/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def serve(root: Path, cron: str, *, params_path: str = "params.yaml", overrides: list[str] | None = None,
          name: str = DEPLOYMENT, port: int | None = None) -> None:
    """Serve `unlearning_pipeline` on `cron` until interrupted (Ctrl-C or SIGTERM)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise ValueError(f"--cron: not a valid cron expression: {cron!r} (e.g. '0 2 * * *')") from None
    api = os.environ.get("PREFECT_API_URL")
    proc = None
    if not api:
        _say("no PREFECT_API_URL: starting a Prefect server on 127.0.0.1 ...")
        log = root / "outputs" / "prefect-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        api, proc = start_server(port, log_file=log)
        _say(f"Prefect server ready at {api.removesuffix('/api')} (UI); API {api}")
    try:
        from prefect.deployments.runner import EntrypointType
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from .pipeline import unlearning_pipeline

        with temporary_settings(updates={PREFECT_API_URL: api}):
            unlearning_pipeline.serve(
                name=name, cron=cron, description="Process pending deletion requests on a schedule.",
                # A scheduled run that meets a manual one waits for it (the lease of a dead one is broken).
                parameters={"root": str(root.resolve()), "params_path": params_path, "overrides": overrides or [],
                            "wait": True},
                entrypoint_type=EntrypointType.MODULE_PATH, print_starting_message=True)
    finally:
        stop_server(proc)


def _say(message: str) -> None:
    from unlearning.console import Console

    with Console() as console:
        console.say(message, label="serve")
