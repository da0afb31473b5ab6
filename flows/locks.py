"""One run at a time: a file lock per project folder, a lease per registered model in the tracking store.

`hold(root, params, command, wait)` takes both, the project lock first. Without `wait` a held one is
refused at once with one line naming the holder (`Busy`, exit 1); with `wait` it waits, saying so
every ~10 s. Nested in a process that holds them already (the CLI around the flow), it is free.

- **Project lock**: `fcntl.flock` on `<root>/.unlearn/lock`, which also holds the holder's pid, host,
  command and start time as one JSON line. The kernel drops a flock when the last descriptor of it
  closes, so a killed holder (even SIGKILL) never leaves a stale lock and the next run gets it at once.
  (Its descriptor is close-on-exec: only a child forked without exec could keep it alive.)
- **Lease**: clones and workers sharing one `MLFLOW_TRACKING_URI` do not share a folder. MLflow has no
  compare-and-set, but it numbers the versions of a registered model atomically (a unique key in the
  store; deleted numbers are never reused). So a lease is a queue of tickets: each contender creates a
  version of the registered model `<name>.lease` whose tags say who it is (owner, host, pid, started,
  heartbeat, expires); the lowest live ticket holds the lease. A heartbeat thread renews the holder's
  ticket. A ticket is stale when it expired or when its pid is dead on this host; anyone deletes a
  stale ticket (with a one-line notice). Deleting a ticket names its exact version, so breaking a stale
  lease can never remove a newer holder's ticket (the race a single lock record would have).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tracking import set_lease, setup_mlflow

if TYPE_CHECKING:
    from unlearning.params import Params

LOCK_FILE = ".unlearn/lock"
TTL_S = 120.0  # a ticket not renewed for this long is stale (renewed every HEARTBEAT_S)
HEARTBEAT_S = 15.0
POLL_S = 1.0
SAY_EVERY_S = 10.0


class Busy(ValueError):
    """Another process holds the project lock or the lease (a ValueError: the CLI reports it with exit 1)."""


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: what the refusal of a second run names."""

    pid: int
    host: str
    command: str
    started: float  # epoch seconds

    @classmethod
    def me(cls, command: str) -> Owner:
        return cls(os.getpid(), socket.gethostname(), command, time.time())

    def describe(self) -> str:
        """`pid 123 on host h, started 11:02:03` (with the date when it is not today)."""
        when = dt.datetime.fromtimestamp(self.started)
        fmt = "%H:%M:%S" if when.date() == dt.date.today() else "%Y-%m-%d %H:%M:%S"
        return f"pid {self.pid} on host {self.host}, started {when.strftime(fmt)}"


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is still in the table, as a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class ProjectLock:
    """`flock` on `<root>/.unlearn/lock`; `try_acquire` returns None when taken, else the holder."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def try_acquire(self, owner: Owner) -> Owner | None:
        import fcntl

        if not self.path.parent.parent.is_dir():  # never create a project folder for a --root typo
            raise FileNotFoundError(f"--root: no such project folder: {self.path.parent.parent}")
        self.path.parent.mkdir(exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec by default
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self.holder() or Owner(0, "?", "unlearn run", 0.0)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(asdict(owner)) + "\n").encode())
        self.fd = fd
        return None

    def holder(self) -> Owner | None:
        try:
            return Owner(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):  # being written, or not ours
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the flock; the file stays, its text is the last holder's
            self.fd = None


class Lease:
    """Tickets (versions of `<model>.lease`) in the tracking store; the lowest live one holds the lease."""

    def __init__(self, client: Any, model: str, owner: Owner, say: Callable[[str], None]) -> None:
        self.client, self.model, self.name, self.owner, self.say = client, model, f"{model}.lease", owner, say
        self.version: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _tags(self) -> dict[str, str]:
        now, o = time.time(), self.owner
        return {"owner": o.command, "host": o.host, "pid": str(o.pid), "started": str(o.started),
                "heartbeat": f"{now:.3f}", "expires": f"{now + TTL_S:.3f}"}

    def enqueue(self) -> None:
        """Create our ticket (and the lease model the first time), and start renewing it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                self.name, tags={"unlearn.lease_of": self.model},
                description=f"Lease of {self.model}: one run at a time (flows/locks.py). Versions are tickets.")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        host, pid = self.owner.host, self.owner.pid
        self.version = str(self.client.create_model_version(self.name, f"lease://{host}/{pid}",
                                                            tags=self._tags()).version)
        self._beat = threading.Thread(target=self._renew, name=f"lease {self.name}", daemon=True)
        self._beat.start()

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                tags = self._tags()
                for key in ("heartbeat", "expires"):
                    self.client.set_model_version_tag(self.name, self.version, key, tags[key])
            except Exception as err:  # noqa: BLE001 - a store hiccup: try again at the next beat
                if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")):
                    self.say(f"warning: lease {self.name} v{self.version} was broken by another process "
                             "(heartbeat too late?); this run no longer holds it")
                    return

    def holder(self) -> Owner | None:
        """None when our ticket is the lowest live one; else the owner of the ticket ahead of ours."""
        tickets = sorted(self.client.search_model_versions(f"name='{self.name}'"), key=lambda v: int(v.version))
        for t in tickets:
            if str(t.version) == self.version:
                return None
            reason = stale(t.tags, t.creation_timestamp / 1000)
            if reason is None:
                return owner_of(t.tags)
            self.say(f"broke a stale lease on {self.model} ({owner_of(t.tags).command}, "
                     f"{owner_of(t.tags).describe()}): {reason}")
            try:
                self.client.delete_model_version(self.name, t.version)
            except Exception:  # noqa: BLE001 - another process broke it first
                pass
        raise Busy(f"our ticket {self.name} v{self.version} was broken as stale by another process (no heartbeat "
                   f"for {TTL_S:.0f} s: a stopped process or an unreachable store?); run again")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        if self.version is not None:
            try:
                self.client.delete_model_version(self.name, self.version)
            except Exception:  # noqa: BLE001 - already broken as stale: nothing left to release
                pass
            self.version = None


def owner_of(tags: dict[str, str]) -> Owner:
    try:
        return Owner(int(tags.get("pid", 0)), tags.get("host", "?"), tags.get("owner", "unlearn run"),
                     float(tags.get("started", 0)))
    except ValueError:
        return Owner(0, "?", "unlearn run", 0.0)


def stale(tags: dict[str, str], created: float) -> str | None:
    """Why a ticket is stale (expired, or its pid is dead on this host), or None while it is live."""
    try:
        expires = float(tags["expires"])
    except (KeyError, ValueError):
        expires = created + TTL_S
    if expires < time.time():
        return f"expired at {dt.datetime.fromtimestamp(expires):%Y-%m-%d %H:%M:%S} (no heartbeat)"
    owner = owner_of(tags)
    if owner.host == socket.gethostname() and owner.pid and not pid_alive(owner.pid):
        return f"pid {owner.pid} is gone"
    return None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _take(what: str, holder: Callable[[], Owner | None], wait: bool, say: Callable[[str], None]) -> None:
    """Poll `holder()` until it returns None; without `wait` a holder is refused at once.

    Waiting, it says so at once, every SAY_EVERY_S, and whenever the holder changes.
    """
    t0 = next_say = time.monotonic()
    last = None
    while (h := holder()) is not None:
        if not wait:
            raise Busy(f"another {h.command} ({h.describe()}) holds {what}; use --wait to wait for it")
        if time.monotonic() >= next_say or h != last:
            say(f"waiting for {h.command} ({h.describe()}) to release {what} ({time.monotonic() - t0:.0f} s) ...")
            next_say, last = time.monotonic() + SAY_EVERY_S, h
        time.sleep(POLL_S)


_held: dict[tuple[str, str, str], int] = {}
_state = threading.Lock()


@contextmanager
def hold(root: Path, params: Params, command: str, wait: bool = False,
         say: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold the project lock of `root`, then the lease of the params' registered model, for the block.

    Args:
        root: the project folder.
        params: the validated params (they name the registered model and the tracking store).
        command: what the holder is doing, as a refused run will read it (`unlearn run`).
        wait: wait for a holder instead of refusing (`--wait`).
        say: where the waiting and stale-lease lines go (stderr).

    Raises:
        Busy: without `wait`, when another process holds either one.
    """
    from .settings import registered_model_name, tracking_uri

    root = Path(root).resolve()
    uri, model = tracking_uri(root, params), registered_model_name(params)
    key = (str(root), uri, model)
    with _state:
        if nested := key in _held:  # this process holds them already (the CLI around the flow)
            _held[key] += 1
    if nested:
        try:
            yield
        finally:
            with _state:
                _held[key] -= 1
        return
    owner = Owner.me(command)
    lock = ProjectLock(root)
    lease: Lease | None = None
    try:
        _take(f"the project lock {lock.path}", lambda: lock.try_acquire(owner), wait, say)
        import mlflow

        setup_mlflow(root, params)  # a new sqlite store is created once, serialised between processes
        lease = Lease(mlflow.MlflowClient(uri), model, owner, say)
        lease.enqueue()
        _take(f"the lease of registered model {model}", lease.holder, wait, say)
        with _state:
            _held[key] = 1
            set_lease(model, f"{lease.name}/v{lease.version}")
        yield
    finally:
        with _state:
            if _held.pop(key, None) is not None:
                set_lease(model, None)
        if lease is not None:
            lease.release()
        lock.release()
