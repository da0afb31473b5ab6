"""`unlearn serve`: the pipeline as a Prefect deployment on a cron schedule, against a real Prefect server.

Schedules need a real server (Prefect's temporary in-process server cannot schedule, STACK.md): the one
at `PREFECT_API_URL`, or one started here on 127.0.0.1 (and stopped again when serving ends). Each
scheduled run processes the pending deletion requests, exactly like `unlearn run`.

The server started here keeps its database in the project's own `PREFECT_HOME` (`<root>/.prefect`): the
shared `~/.prefect` would show other projects' runs, and a second process opening its sqlite file (a
`prefect` command without `PREFECT_API_URL`) failed with "database is locked" while the server ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .settings import QUIET_ENV, mask_credentials
from .stack_procs import free_port

DEPLOYMENT = "scheduled"
PREFECT_HOME_DIR = ".prefect"  # per project, gitignored


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def prefect_home(root: Path) -> Path:
    """The project's own PREFECT_HOME (the server's sqlite database, profiles, local results)."""
    return root.resolve() / PREFECT_HOME_DIR


def _prefect_exe() -> str:
    """The `prefect` command of this interpreter's environment (a venv need not be activated)."""
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else shutil.which("prefect") or "prefect"


def run_hint(api_url: str, name: str = DEPLOYMENT) -> str:
    """The command that starts a run of the served deployment now, against this server."""
    from .pipeline import unlearning_pipeline

    exe = _prefect_exe()
    if shutil.which("prefect") == exe:
        exe = "prefect"
    return f"PREFECT_API_URL={api_url} {exe} deployment run '{unlearning_pipeline.name}/{name}'"


def server_env(port: int, home: Path) -> dict[str, str]:
    """Environment of a server on 127.0.0.1:`port` whose UI talks to that same port, its data in `home`.

    Without PREFECT_SERVER_UI_API_URL (or API host and port), the UI asks http://127.0.0.1:4200/api,
    whatever port the server listens on.
    """
    env = {**os.environ, **QUIET_ENV}
    for key in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL"):
        env.pop(key, None)
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"}


def start_server(port: int | None = None, timeout_s: float = 180.0, log_file: Path | None = None,
                 home: Path | None = None):
    """Start `prefect server start` on 127.0.0.1; returns (api_url, process) once /api/health answers.

    `home` is its PREFECT_HOME (default: the caller's). The server gets SIGTERM when this process dies,
    even by SIGKILL (Linux: `PR_SET_PDEATHSIG`).
    """
    from .recovery import death_signal_preexec

    port = port or free_port()
    env = server_env(port, home or Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect"))
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([_prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
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
    """Serve `unlearning_pipeline` on `cron` until interrupted (Ctrl-C or SIGTERM).

    One run at a time (`limit=1`): runs of one project queue for its lock anyway, and a run that overlaps
    the next tick would only compete for the CPU.
    """
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise ValueError(f"--cron: not a valid cron expression: {cron!r} (e.g. '0 2 * * *')") from None
    for item in overrides or []:  # the deployment keeps its parameters in the server's database and UI
        if mask_credentials(item) != item:
            from unlearning.params import ConfigError

            raise ConfigError(f"--set {mask_credentials(item)}: holds a password, and `unlearn serve` would store "
                             "it in the deployment's parameters, shown by the Prefect UI; put credentials in the "
                             "environment (MLFLOW_TRACKING_URI, UNLEARN_DVC_REMOTE) instead")
    root = root.resolve()
    home = prefect_home(root)
    home.mkdir(exist_ok=True)
    api = os.environ.get("PREFECT_API_URL")
    proc = None
    if not api:
        _say(f"no PREFECT_API_URL: starting a Prefect server on 127.0.0.1 (PREFECT_HOME {home}) ...")
        api, proc = start_server(port, log_file=home / "server.log", home=home)
        _say(f"Prefect server ready: UI {api.removesuffix('/api')}, API {api} (log {home / 'server.log'})")
    try:
        from prefect.deployments.runner import EntrypointType
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        from .pipeline import unlearning_pipeline

        _say("to start a run now, besides the schedule:")
        print(f"  {run_hint(api, name)}", flush=True)  # a line of its own: copy and paste it

        # The flow runs are subprocesses: they get these settings, and PREFECT_HOME through the environment.
        os.environ["PREFECT_HOME"] = str(home)
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(home)}):
            unlearning_pipeline.serve(
                name=name, cron=cron, description="Process pending deletion requests on a schedule.",
                # A scheduled run that meets a manual one waits for it (the lease of a dead one is broken).
                parameters={"root": str(root), "params_path": params_path, "overrides": overrides or [],
                            "wait": True},
                limit=1, entrypoint_type=EntrypointType.MODULE_PATH,
                # Its own hint omits PREFECT_API_URL (that form opened the sqlite file: "database is locked").
                print_starting_message=False)
    finally:
        _stop_flow_runs()
        stop_server(proc)


def _stop_flow_runs(timeout_s: float = 30.0) -> None:
    """SIGTERM the flow runs still in progress (the runner's child processes), then wait for them.

    Prefect 3.8's runner exits on SIGTERM without stopping them (its handler drops the stop coroutine),
    and this process would then hang at exit, joining a run that outlived its server. A run stopped here
    reports itself crashed while the server still answers; the project lock dies with it.
    """
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(5)


def _say(message: str) -> None:
    from unlearning.console import Console

    with Console() as console:
        console.say(message, label="serve")
