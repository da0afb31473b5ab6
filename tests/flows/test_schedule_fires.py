"""A schedule that fires: `unlearn serve --cron "* * * * *"` on loopback, and a run that the server's
scheduler created (not a manual one) runs the real pipeline on a tiny project to COMPLETED by itself,
leaving log lines and the results and gate artifacts on the Prefect run. Slow: a server start (20-45 s),
up to a minute to the next tick, then a tiny pipeline run (a few minutes on 2 shared cores).

Prefect 3.8 with SQLAlchemy 2.1 showed the deployment and its cron over the API, but its scheduler failed
(`Can't evaluate bulk DML statement`) and created no run at all: only waiting for a run catches that.
"""

from __future__ import annotations

import json
import time

import pytest
from flowtest_utils import git, make_project
from servetest_utils import api_get, api_post, start_serve, stop_serve

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 300  # server start and the deployment registered
RUN_TIMEOUT_S = 900  # the next minute's tick, the runner's poll, then the tiny pipeline


def _scheduled_runs(api: str, deployment_id: str) -> list[dict]:
    """Runs of the deployment that the server's scheduler created from its cron schedule."""
    runs = api_post(api, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}},
                                           "sort": "EXPECTED_START_TIME_ASC"})
    return [r for r in runs if r["auto_scheduled"] and (r.get("created_by") or {}).get("type") == "SCHEDULE"]


def test_a_scheduled_run_completes_by_itself(tmp_path, tracking):
    from flows.prefect_ui import GATES_KEY, RESULTS_KEY
    from flows.serve import _healthy, deployments, free_port

    root = make_project(tmp_path / "project")
    with open(root / ".gitignore", "a") as f:
        f.write("/.prefect/\n")
    git(root, "commit", "-qam", "ignore the project's PREFECT_HOME")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = start_serve(root, "* * * * *", port, tmp_path / "serve.log")

    def log_tail() -> str:
        server = root / ".prefect" / "server.log"
        return ((tmp_path / "serve.log").read_text(errors="replace")[-4000:] + "\n--- server log:\n"
                + (server.read_text(errors="replace")[-3000:] if server.exists() else "(none)"))

    try:
        t0 = time.monotonic()
        deployment = None
        while deployment is None:
            assert time.monotonic() - t0 < START_TIMEOUT_S, "deployment never appeared\n" + log_tail()
            assert proc.poll() is None, log_tail()
            if _healthy(api):
                deployment = next((d for d in deployments(api) if d["name"] == "scheduled"), None)
            time.sleep(2)
        registered = time.monotonic()
        run = None
        while run is None or run["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert time.monotonic() - registered < RUN_TIMEOUT_S, (
                f"no scheduled run completed within {RUN_TIMEOUT_S} s (last: {run and run['state_name']})\n"
                + log_tail())
            assert proc.poll() is None, log_tail()
            time.sleep(5)
            started = [r for r in _scheduled_runs(api, deployment["id"]) if r["start_time"]]
            run = started[0] if started else None
        done = time.monotonic()
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}: {run['state']['message']}\n" + log_tail()

        # Created by the scheduler: its first state was "Scheduled", set by the server, not by a client call.
        states = sorted(api_get(api, f"/flow_run_states/?flow_run_id={run['id']}"), key=lambda s: s["timestamp"])
        assert states[0]["name"] == "Scheduled" and states[-1]["type"] == "COMPLETED"
        assert run["parameters"]["root"] == str(root.resolve())

        # What the run did, readable in Prefect: log lines (stages, times, gates) and the artifacts.
        logs: list[dict] = []
        for _ in range(10):  # the API log handler sends in batches: allow it a moment after COMPLETED
            logs = api_post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
            if any("promotion:" in entry["message"] for entry in logs):
                break
            time.sleep(2)
        messages = [entry["message"] for entry in logs]
        assert any(m.startswith("register_and_promote: finished in") for m in messages), messages
        assert any(m.startswith("gates ") for m in messages), messages
        artifacts = api_post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        by_key = {a["key"]: a for a in artifacts}
        assert {RESULTS_KEY, GATES_KEY} <= set(by_key), sorted(by_key)
        table = by_key[GATES_KEY]["data"]
        table = json.loads(table) if isinstance(table, str) else table
        assert {row["method"] for row in table} == {"finetune", "neggrad"}
        assert {row["verdict"] for row in table} <= {"pass", "fail", "inconclusive"}
        print(f"\nscheduled run {run['id']} ({run['name']}): expected {run['expected_start_time']}, "
              f"COMPLETED {done - registered:.0f} s after the deployment was registered (server up and "
              f"registered {registered - t0:.0f} s after start; run time {run['total_run_time']:.0f} s); "
              f"{len(logs)} log lines, {len(artifacts)} artifacts")
    finally:
        stopped_in = stop_serve(proc)
    # The next minute's run is likely in progress: SIGTERM must still end the command, its runs and server.
    assert stopped_in is not None, "`unlearn serve` did not exit within 90 s of SIGTERM\n" + log_tail()
    print(f"`unlearn serve` exited {stopped_in:.0f} s after SIGTERM")
