"""Processes of the local stack (flows/stack.py): free ports, starting a service in its own process group
with its log file, telling whether a recorded process is still the one we started, and stopping it.

Each service runs in a new session (its own process group): stopping it signals the whole group, so the
MLflow server's uvicorn child and each Dask nanny's worker process go with it, and nothing else does.
A pid is only signalled while its start time matches the one recorded (a reused pid is left alone).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StackError(RuntimeError):
    """A service failed: one line naming it and where its log is."""

    def __init__(self, service: str, why: str, log: Path | None = None) -> None:
        super().__init__(f"{service}: {why}" + (f" (log: {log})" if log else ""))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick for port 0): two stacks on one machine differ."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return None if fields[0] == "Z" else fields[19]


def spawn(name: str, cmd: list[str], log: Path, *, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Start `cmd` in a new session, output appended to `log`; its record for state.json."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return {"name": name, "pid": proc.pid, "started": start_time(proc.pid), "log": str(log)}


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`: what a service left behind when its leader went."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(stat.parent.name))
    return found


def alive(rec: dict[str, Any]) -> bool:
    """Whether the recorded process still runs and is the one we started (same start time)."""
    now = start_time(rec["pid"])
    return now is not None and now == rec.get("started")


def _reap(pid: int) -> None:
    """Collect an exited child of this process (a failed `up` stops what it started itself)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _ours(rec: dict[str, Any]) -> bool:
    """Whether anything of the service runs: its leader (same start time), or, the leader gone, members of
    its process group. Linux never hands out a pid still in use as a group id, so a pid running another
    program means the group is empty."""
    now = start_time(rec["pid"])
    if now is not None:
        return now == rec.get("started")
    return rec.get("group", True) and bool(group_members(rec["pid"]))


def _signal(rec: dict[str, Any], sig: int) -> None:
    """The service's own group (it was started in a new session); only the pid where it is not a leader."""
    if not _ours(rec):
        return
    try:
        if rec.get("group", True):
            os.killpg(rec["pid"], sig)
        elif alive(rec):
            os.kill(rec["pid"], sig)
    except ProcessLookupError:
        pass


def stop(rec: dict[str, Any], timeout: float = 20.0) -> bool:
    """SIGTERM to the service's process group, SIGKILL after `timeout`; True if it had to be killed."""
    def gone() -> bool:
        _reap(rec["pid"])
        return not _ours(rec)

    if gone():
        return False
    _signal(rec, signal.SIGTERM)
    killed = not wait_until(gone, timeout)
    _signal(rec, signal.SIGKILL)  # what is left of the group (members that outlived the leader)
    wait_until(gone, 10.0)
    return killed


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.3) -> bool:
    """Poll `check` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def wait_ready(service: str, rec: dict[str, Any], check: Callable[[], bool], timeout: float) -> None:
    """Wait for `check`; raise StackError naming the log if the process exits first or time runs out."""
    def ready() -> bool:
        if not alive(rec):
            _reap(rec["pid"])
            raise StackError(service, "exited while starting", Path(rec["log"]))
        return check()

    if not wait_until(ready, timeout, every=0.5):
        raise StackError(service, f"not ready after {timeout:.0f} s", Path(rec["log"]))


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 200 (MLflow's /health answers `OK`)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
