"""`unlearn serve`: a real Prefect server on loopback, the deployment and its cron schedule read back
through the REST API, and everything the command started stopped again. Slow (server start-up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from flowtest_utils import make_project

pytestmark = pytest.mark.slow


def test_serve_creates_a_scheduled_deployment(tmp_path, tracking):
    from flows.serve import _healthy, deployments, free_port

    root = make_project(tmp_path / "project")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect_home")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--cron", "0 2 * * *", "--port", str(port),
                             "--name", "nightly", "--root", str(root)], cwd=root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    found = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and found is None:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            if _healthy(api):
                found = next((d for d in deployments(api) if d["name"] == "nightly"), None)
            time.sleep(1)
        assert found is not None, "deployment never appeared"
        crons = [s["schedule"].get("cron") for s in found["schedules"]]
        assert crons == ["0 2 * * *"] and found["schedules"][0]["active"]
        assert found["parameters"]["root"] == str(root.resolve())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + 30
    while _healthy(api) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _healthy(api), "the server started by `unlearn serve` is still running"
