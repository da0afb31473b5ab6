"""`unlearn run`'s early Prefect server (flows/temp_server.py): it serves a flow, stops cleanly, steps aside
for a configured API, falls back to Prefect's own start when it fails, and never delays a refused run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from flows import temp_server
from flows.temp_server import NOT_NEEDED, TemporaryServer, temporary_server

REPO = Path(__file__).resolve().parents[2]


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO), **extra}


def test_a_flow_runs_on_the_early_server_and_the_process_exits_without_logging_errors(tmp_path):
    script = textwrap.dedent("""
        import os, urllib.request
        from flows.temp_server import temporary_server
        with temporary_server() as server:
            with server.serving():
                from prefect import flow, get_run_logger
                from prefect.settings import get_current_settings

                @flow
                def tiny():
                    get_run_logger().warning("a log record for the API")
                    return 7

                api = os.environ["PREFECT_API_URL"]
                assert get_current_settings().api.url == api
                assert urllib.request.urlopen(api + "/health").status == 200
                assert tiny() == 7
            assert "PREFECT_API_URL" not in os.environ
        print("port", api.split(":")[2].split("/")[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], env=_clean_env(tmp_path), capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    # The logs left for the API went out while the server answered: none retried against a stopped one.
    assert "Error logging to API" not in out.stderr
    port = int(out.stdout.split("port")[-1])
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server still listens after the run"


def test_a_configured_api_makes_the_subprocess_step_aside(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flows.temp_server", "1"], capture_output=True, text=True,
                         env=_clean_env(tmp_path, PREFECT_API_URL="http://127.0.0.1:9/api"), timeout=120)
    assert out.returncode == NOT_NEEDED, out.stderr[-2000:]


def test_a_failed_start_falls_back_to_prefects_own_server(monkeypatch, capsys):
    tied, drained = [], []
    monkeypatch.setattr("flows.recovery.tie_temporary_server", lambda: tied.append(1))
    monkeypatch.setattr(temp_server, "drain_to_api", lambda: drained.append(1))
    server = TemporaryServer()
    server.proc = subprocess.Popen([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                                   stdout=subprocess.DEVNULL)
    server.api = "http://127.0.0.1:9/api"
    with server.serving():
        assert "PREFECT_API_URL" not in os.environ or os.environ["PREFECT_API_URL"] != server.api
    assert tied == [1] and drained == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exited with 3" in err[0] and "Prefect starts its own" in err[0]


def test_a_refused_run_does_not_wait_for_the_server(monkeypatch):
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(60)"]
    procs = []

    def start(self):
        self.proc = subprocess.Popen(stubborn)
        self.api = "http://127.0.0.1:9/api"
        procs.append(self.proc)
        return self

    monkeypatch.setattr(TemporaryServer, "start", start)
    t0 = time.monotonic()
    try:
        with temporary_server():
            raise ValueError("bad input")
    except ValueError:
        pass
    elapsed = time.monotonic() - t0
    procs[0].kill()
    procs[0].wait()
    # A clean stop waits up to 5 s for a server that ignores SIGTERM; a refused run must not.
    assert elapsed < 3.0, elapsed


def test_the_server_dies_with_a_killed_run(tmp_path):
    script = textwrap.dedent("""
        import time
        from flows.temp_server import temporary_server
        with temporary_server() as server:
            print(server.proc.pid, flush=True)
            time.sleep(120)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], env=_clean_env(tmp_path), stdout=subprocess.PIPE,
                           text=True, cwd=tmp_path)
    pid = int(run.stdout.readline())
    run.kill()  # SIGKILL: no atexit, no finally
    run.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the early Prefect server outlived the run that started it"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited (its parent, init, reaps it)


def test_an_api_url_in_the_environment_starts_nothing(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    server = TemporaryServer().start()
    assert server.proc is None and server.wait() == "not needed"
    with server.serving():  # Prefect's configuration decides: the URL is left as it was
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
