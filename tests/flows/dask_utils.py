"""Ad-hoc stores and a Dask cluster for the `scale` tests (`make stack-up` can stand in for `servers`).

`servers` starts `mlflow server` on a sqlite file (artifacts served through it) and makes a local-path DVC
remote; `WorkerFolders` is a Dask worker plugin that moves each worker into an empty folder of its own and
records, with a Python audit hook, every file the worker opens or lists under a forbidden folder (the
driver's project): the test reads the records back and asserts there are none.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

AUDITED = ("open", "os.listdir", "os.scandir", "os.chdir", "os.walk", "shutil.copyfile", "subprocess.Popen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def servers(folder: Path):
    """`mlflow server` (sqlite backend, artifacts proxied: `mlflow-artifacts:`) and a local DVC remote.

    Yields `{"tracking_uri", "dvc_remote"}`; the server is stopped on exit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = open(folder / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=folder, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        (folder / "remote").mkdir(exist_ok=True)
        yield {"tracking_uri": url, "dvc_remote": str(folder / "remote")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


_seen: list[str] = []


class WorkerFolders(WorkerPlugin):
    """Each worker in `<base>/<worker name>` (empty at start; its UNLEARN_WORKER_DIR), auditing `forbidden`."""

    name = "unlearn-worker-folders"

    def __init__(self, base: str, forbidden: str) -> None:
        self.base, self.forbidden = base, forbidden

    def setup(self, worker) -> None:
        folder = Path(self.base) / str(worker.name)
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        os.environ["UNLEARN_WORKER_DIR"] = str(folder)
        forbidden = self.forbidden

        def hook(event: str, args: tuple) -> None:
            if event not in AUDITED:
                return
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    text = os.fsdecode(arg) if not isinstance(arg, str) else arg
                    if text.startswith(forbidden):
                        _seen.append(f"{event} {text}")
                elif isinstance(arg, (list, tuple)):
                    joined = " ".join(str(a) for a in arg)
                    if forbidden in joined:
                        _seen.append(f"{event} {joined[:200]}")

        sys.addaudithook(hook)


def seen() -> list[str]:
    """What the audit hook of this worker recorded (run through `client.run`)."""
    return list(_seen)


def worker_folder_listing() -> list[str]:
    """The files now in this worker's folder (relative), to show what it kept (its DVC cache)."""
    base = Path(os.environ.get("UNLEARN_WORKER_DIR", "."))
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
