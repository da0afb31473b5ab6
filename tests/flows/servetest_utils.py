"""Helpers of the `unlearn serve` tests: start the command, read Prefect's REST API, stop it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_serve(root: Path, cron: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`unlearn serve` on `root` in a subprocess (no PREFECT_API_URL: it starts its own server on `port`)."""
    env = {**os.environ}
    env.pop("PREFECT_API_URL", None)
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--cron", cron, "--port", str(port),
                                 "--root", str(root), *extra], cwd=root, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


def stop_serve(proc: subprocess.Popen, timeout_s: float = 90) -> float | None:
    """SIGTERM, as a service manager stops it; returns the seconds it took to exit (None: killed)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None
    return time.monotonic() - t0


def api_post(api: str, path: str, body: dict | None = None) -> list[dict]:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return json.loads(resp.read())


def api_get(api: str, path: str) -> dict | list:
    with urllib.request.urlopen(f"{api}{path}", timeout=20) as resp:
        return json.loads(resp.read())
