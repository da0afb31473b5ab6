"""`unlearn serve`: a real Prefect server on loopback, the deployment and its cron schedule read back
through the REST API, the UI pointed at the port served, the project's own PREFECT_HOME, the printed
`prefect deployment run` command working, and everything the command started stopped again. Slow (server
start-up). That the schedule fires is test_schedule_fires.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

import pytest
from flowtest_utils import make_project
from servetest_utils import api_get, api_post, start_serve, stop_serve

pytestmark = pytest.mark.slow


def test_serve_creates_a_scheduled_deployment(tmp_path, tracking, monkeypatch):
    from flows.serve import _healthy, deployments, free_port

    root = make_project(tmp_path / "project")
    port = free_port()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect_home"))  # the user's: must stay unused
    log = tmp_path / "serve.log"
    proc = start_serve(root, "0 2 * * *", port, log, "--name", "nightly")
    api = f"http://127.0.0.1:{port}/api"
    found = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and found is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            if _healthy(api):
                found = next((d for d in deployments(api) if d["name"] == "nightly"), None)
            time.sleep(1)
        assert found is not None, "deployment never appeared"
        crons = [s["schedule"].get("cron") for s in found["schedules"]]
        assert crons == ["0 2 * * *"] and found["schedules"][0]["active"]
        assert found["parameters"]["root"] == str(root.resolve())
        # The UI asks the API at the port served (Prefect's default would be 4200), from the project's home.
        assert api_get(f"http://127.0.0.1:{port}", "/ui-settings")["api_url"] == api
        assert (root / ".prefect" / "prefect.db").exists()
        assert not (tmp_path / "prefect_home" / "prefect.db").exists()
        # The printed command starts a manual run of this deployment (not a scheduled one).
        hint = next(line.strip() for line in log.read_text().splitlines() if " deployment run " in line)
        assert hint.startswith(f"PREFECT_API_URL={api} ") and hint.endswith("deployment run 'unlearning_pipeline/nightly'")
        variable, *command = shlex.split(hint)
        ran = subprocess.run(command, env={**os.environ, "PREFECT_API_URL": api}, capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        runs = api_post(api, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [found["id"]]}}})
        manual = [r for r in runs if not r["auto_scheduled"]]
        assert len(manual) == 1 and manual[0]["created_by"] is None, manual  # the scheduler's say "SCHEDULE"
    finally:
        stop_serve(proc)
    deadline = time.monotonic() + 30
    while _healthy(api) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _healthy(api), "the server started by `unlearn serve` is still running"
