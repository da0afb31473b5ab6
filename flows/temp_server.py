"""Prefect's temporary server, started by `unlearn run` as it begins instead of at the flow's first API call.

Without an API URL, Prefect starts its temporary server (a uvicorn subprocess) when the flow first calls
the API, and the run waits: first for `prefect.server` to be imported into this process, only to build the
command (4.0 s measured at load 2.5), then for the subprocess to import it again and answer (9.3 s). Here
a subprocess starts the same server as soon as `unlearn run` knows it has work to do, and boots while the
run loads its params and data and checks them (about 10 s on two cores); the flow then finds
`PREFECT_API_URL` set and starts nothing. The subprocess reads Prefect's settings itself, so this process
does not import Prefect to decide: with an API configured (or the temporary server disabled) it exits at
once and Prefect's configuration decides, as without us.

Whatever goes wrong (no answer in time, an early exit) falls back to Prefect's own start, tied to us
(`recovery.tie_temporary_server`), after one line on stderr: the run never depends on this shortcut. A run
that stops on bad input terminates the server without waiting for it. The server gets SIGTERM when we die,
however we die (`recovery.death_signal_preexec`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

from .stack_procs import free_port

# What Prefect's `SubprocessASGIServer` sets for its temporary server: no UI, no background services.
EPHEMERAL_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# Ours: no block-type registration at start (it imports every installed Prefect collection, prefect-dask
# included, and hashes the block registry: 0.2 s of a 2.2-2.5 s boot); the pipeline uses no blocks.
LEAN_ENV = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "0", "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "0"}
NOT_NEEDED = 17  # the subprocess's exit code when Prefect is configured with an API or without a temporary server


class TemporaryServer:
    """One temporary Prefect server for one run: `start` returns at once, `serving` waits for it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.api: str | None = None
        self.timeout_s = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 20)
        self._log = None

    def start(self) -> TemporaryServer:
        """Start the subprocess (this module run as a script) on a free port; returns at once."""
        from .recovery import death_signal_preexec

        env = dict(os.environ)
        if env.get("PREFECT_API_URL"):  # a real server, named in the environment: nothing to start
            return self
        if "prefect.settings" in sys.modules:  # loaded already (a test harness, a caller): its settings decide
            settings = sys.modules["prefect.settings"].get_current_settings()
            if _prefect_decides(settings):
                return self
            env.update(settings.to_environment_variables(exclude_unset=True))
        port = free_port()
        here = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "flows.temp_server", str(port)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=death_signal_preexec())
        self.api = f"http://127.0.0.1:{port}/api"
        return self

    def wait(self) -> str:
        """Wait for the subprocess: "ready" (it answers /health), "not needed" (Prefect has an API configured)
        or "failed" (it exited or did not answer in time; one line on stderr, the subprocess stopped)."""
        if self.proc is None:
            return "not needed"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code == NOT_NEEDED:
                self.stop()
                return "not needed"
            if code is not None:
                return self._give_up(f"it exited with {code}")
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return "ready"
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return self._give_up(f"no answer within {self.timeout_s:.0f} s")

    def _give_up(self, why: str) -> str:
        tail = ""
        if self._log is not None:
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").strip().splitlines()
            tail = f": {lines[-1][:200]}" if lines else ""
        print(f"unlearn run: the early Prefect server on {self.api} failed ({why}{tail}); Prefect starts its own",
              file=sys.stderr)
        self.stop()
        return "failed"

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Point Prefect (this process and its children) at the server while inside, or let Prefect decide.

        On the way out, what Prefect still holds for the API is sent while a temporary server still answers.
        """
        state = self.wait()
        if state == "not needed":  # Prefect's configuration decides, as without us
            yield
            return
        if state == "failed":  # Prefect starts its own, stopped only at exit
            from .recovery import tie_temporary_server

            tie_temporary_server()
            pointed = nullcontext()
        else:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from .runner import environ

            pointed = ExitStack()
            pointed.enter_context(environ({"PREFECT_API_URL": self.api}))  # subprocesses and Dask workers
            pointed.enter_context(temporary_settings(updates={PREFECT_API_URL: self.api}))
        with pointed:
            try:
                yield
            finally:
                drain_to_api()

    def stop(self, wait: bool = True) -> None:
        """SIGTERM, then (with `wait`) SIGKILL after 5 s, as Prefect stops its own server."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5 if wait else 0.2)
            except subprocess.TimeoutExpired:
                if wait:
                    proc.kill()
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def drain_to_api(timeout_s: float = 10.0) -> None:
    """Send the logs and events Prefect still holds while the server answers.

    Prefect sends them at interpreter exit, after its own server's `atexit` stop; ours stops before that,
    and without this drain each batch retried its connection with back-off: `unlearn run` hung 76 s after
    printing its result ("Error logging to API").
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


@contextmanager
def temporary_server() -> Iterator[TemporaryServer]:
    """A started `TemporaryServer`, stopped on the way out; on an error without waiting for it."""
    server = TemporaryServer().start()
    try:
        yield server
    except BaseException:
        server.stop(wait=False)
        raise
    server.stop()


def _prefect_decides(settings) -> bool:
    """Prefect's settings name an API, or forbid a temporary server: nothing for us to start."""
    return bool(settings.api.url) or not settings.server.ephemeral.enabled


def _serve(port: int) -> int:
    """The subprocess: Prefect's temporary server on 127.0.0.1:`port`, unless Prefect is configured otherwise."""
    os.environ.update(EPHEMERAL_ENV)  # before Prefect reads its settings
    for key, value in LEAN_ENV.items():  # a user's own setting wins
        os.environ.setdefault(key, value)
    from prefect.settings import get_current_settings

    if _prefect_decides(get_current_settings()):
        return NOT_NEEDED
    import uvicorn

    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1])))
