"""DVC from inside the flow: `dvc commit <stage>`, `dvc status <stage>`, `dvc push` of the data version.

Why in-process (shape (a) of DESIGN.md) rather than one `dvc repro -s <stage>` subprocess per task
(shape (b)). Measured on the 2-core CPU machine (load 2-4 from other work), digits, mlp:
- shape (b) pays a new process per stage: `dvc repro -s -f version_data` took 7.1 s for a stage whose
  work is under 1 s in-process, `dvc repro -s -f unlearn@neggrad` 14.8 s for 0.1 s of unlearning and
  ~1 s of logging (imports: torch 1.9 s, mlflow 1.8 s, unlearning 1.1 s, plus DVC's start-up and lock).
  The pipeline has 12 stages with 4 methods: ~100 s of overhead, twice the whole in-process run;
  `dvc exp run` (which has to work that way) re-ran 3 stages in 96 s;
- shape (a): `Repo.commit(stage, force=True)` 0.3-0.4 s, `Repo.status([stage])` 0.1-0.6 s,
  `Repo.add("data")` 0.1-0.4 s; the whole first `unlearn run` takes 50-60 s (flow body 21-33 s), a
  second one 27-30 s, of which ~17 s is start-up (imports, Prefect's temporary server).
So Prefect tasks call the stage functions directly, record the finished stage with `dvc commit`, and skip
a stage that `dvc status` reports unchanged. `dvc repro` runs the very same stage functions through
`python -m flows.stages <stage> [method]`; after either, `dvc status` is clean.

`dvc.repo.Repo` is not thread-safe (STACK.md), and Prefect runs tasks in threads: every call here holds
one process-wide lock, and opens a fresh `Repo` (cheap) so no state leaks between calls.

Commits from concurrent tasks are grouped (`commit`): each one rewrites the whole dvc.lock through a
round-trip YAML parser, 0.6-0.7 s with ten methods (1,600 lines), and the ten evaluate tasks of a flow
finish together; their commits, one at a time, added 6-7 s to the flow. Stages that wait for the lock
are recorded together, with one write of dvc.lock (2.1 s for ten).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._dvc_yaml import fast_yaml

_lock = threading.RLock()


def enabled(root: Path) -> bool:
    """Whether the project is a DVC repo (`.dvc/` present)."""
    return (root / ".dvc").is_dir()


@contextmanager
def _repo(root: Path, config: dict | None = None):
    """A fresh `Repo` with the process inside `root`: DVC resolves paths (stage cache, targets) against
    the cwd. Held under the lock, so only DVC calls see the change; the stages use absolute paths.
    `config` is merged over the repo's config files for this `Repo` only (nothing is written)."""
    from dvc.repo import Repo

    # DVC prints its log lines twice under another root logger unless told otherwise (STACK.md).
    logging.getLogger("dvc").setLevel(logging.WARNING)
    with _lock:
        old = os.getcwd()
        os.chdir(root)
        repo = Repo(str(root), config=config)
        try:
            yield repo
        finally:
            repo.close()
            os.chdir(old)


def _target(root: Path, stage: str) -> str:
    """`<root>/dvc.yaml:<stage>`: DVC resolves bare stage names against the current directory."""
    return f"{root / 'dvc.yaml'}:{stage}"


REMOTE_ENV = "UNLEARN_DVC_REMOTE"
REMOTE_NAME = "unlearn"  # the name the configured remote gets in DVC's runtime config


def remote_url(root: Path, url: str | None = None) -> str | None:
    """The DVC remote of `orchestration.dvc_remote`: `UNLEARN_DVC_REMOTE`, else `url` (the caller's
    params), else params.yaml of `root`; None when none is set. A local path is made absolute (the
    runtime config has no file for DVC to resolve it against)."""
    url = os.environ.get(REMOTE_ENV) or url
    if not url and (root / "params.yaml").exists():
        from .settings import load

        url = load(root, methods=False).orchestration.dvc_remote
    if not url:
        return None
    return url if "://" in url else str(Path(url).expanduser().resolve())


def _remote_config(root: Path, url: str | None) -> dict | None:
    """Runtime config that makes the configured remote DVC's default: `.dvc/config` and
    `.dvc/config.local` stay untouched (so git and `dvc status` stay clean); a remote that
    `dvc remote add -d` put there is used when none is configured here."""
    url = remote_url(root, url)
    return None if url is None else {"core": {"remote": REMOTE_NAME}, "remote": {REMOTE_NAME: {"url": url}}}


def push_if_remote(root: Path, target: str = "data", url: str | None = None) -> bool:
    """`dvc push <target>` when a DVC remote is configured (DESIGN: the data version travels): the
    one of `remote_url`, else the default remote of DVC's own config. False when there is none."""
    with _repo(root, _remote_config(root, url)) as repo:
        if not repo.config.get("core", {}).get("remote"):
            return False
        repo.push(targets=[str(root / target)])
        return True


def pull(root: Path, targets: list[str], url: str | None = None, cache: Path | None = None) -> None:
    """`dvc pull` of `targets` (stage names such as `version_data`, or out paths) from the remote, into
    `root`: what a worker that shares no disk with the driver calls before a stage.

    `root` needs dvc.yaml and dvc.lock (the exact data version is the hashes in dvc.lock); a folder
    without `.dvc/` is made a DVC repo first (no git), so a worker's empty folder works. `cache`: a DVC
    cache folder kept across pulls (a worker's, shared by its task folders: a second pull of one version
    is a local checkout).
    """
    if not (root / "dvc.lock").exists():
        raise FileNotFoundError(f"dvc pull needs {root / 'dvc.lock'} (it names the data version to fetch)")
    config = _remote_config(root, url)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        config = {**(config or {}), "cache": {"dir": str(cache)}}
    if not enabled(root):
        from dvc.repo import Repo

        Repo.init(str(root), no_scm=True).close()
    with _repo(root, config) as repo:
        if not repo.config.get("core", {}).get("remote"):
            raise RuntimeError(f"no DVC remote to pull from: set {REMOTE_ENV} or orchestration.dvc_remote")
        repo.pull(targets=[_pull_target(root, t) for t in targets])


def _pull_target(root: Path, target: str) -> str:
    """A stage of dvc.yaml (`version_data`, `unlearn@neggrad`) as `<root>/dvc.yaml:<stage>`, else an out path."""
    import yaml

    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}) \
        if (root / "dvc.yaml").exists() else {}
    return _target(root, target) if target.split("@")[0] in stages else str(root / target)


@dataclass(eq=False)  # compared by identity
class _Ticket:
    """Stages one caller asked to commit; `done` and `error` are set by whichever caller commits them."""

    stages: list[str]
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Queue:
    tickets: list[_Ticket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_queues: dict[Path, _Queue] = {}


def commit(root: Path, stages: list[str]) -> None:
    """Record finished stages in dvc.lock (`dvc commit --force <stage>`): their deps, params and outs.

    Callers in other threads that wait meanwhile are recorded in the same pass (one dvc.lock write);
    each caller returns once its own stages are recorded, or raises its own stages' error.
    """
    if not stages:
        return
    queue = _queues.setdefault(root, _Queue())
    ticket = _Ticket(list(stages))
    with queue.lock:
        queue.tickets.append(ticket)
    with _lock:
        if not ticket.done:
            with queue.lock:
                batch, queue.tickets = queue.tickets, []
            if ticket not in batch:  # taken by a caller that died before recording it
                batch.append(ticket)
            _commit_batch(root, batch)
    if ticket.error is not None:
        raise ticket.error


def _commit_batch(root: Path, batch: list[_Ticket]) -> None:
    """Commit every ticket's stages with one dvc.lock write; on any failure, each ticket on its own."""
    with _repo(root) as repo, fast_yaml():
        try:
            if sum(len(t.stages) for t in batch) > 1:  # one caller's many stages too (record_deferred)
                _commit_together(repo, [_target(root, s) for t in batch for s in t.stages])
                for t in batch:
                    t.done = True
                return
        except Exception:  # noqa: BLE001 - retried one by one below, so each caller gets its own error
            pass
        for t in batch:
            try:
                for stage in t.stages:
                    repo.commit(_target(root, stage), force=True)
            except Exception as err:  # noqa: BLE001 - handed to the caller that owns these stages
                t.error = err
            t.done = True


def _commit_together(repo, targets: list[str]) -> None:
    """`Repo.commit(target, force=True)` for several targets, writing each dvc file once.

    Repo.commit writes dvc.lock once per call, for the stages of its one target; this is its loop
    (DVC 3.x: under the repo lock, save and commit each stage, then `dump_stages` per dvc file) over
    several targets.
    """
    from dvc.repo import lock_repo

    with lock_repo(repo):
        infos = [info for target in targets for info in repo.stage.collect_granular(target)]
        by_file: dict[str, tuple[object, list]] = {}
        for info in infos:
            info.stage.save()
            info.stage.commit(filter_info=info.filter_info)
            by_file.setdefault(info.stage.dvcfile.path, (info.stage.dvcfile, []))[1].append(info.stage)
        for dvcfile, group in by_file.values():
            dvcfile.dump_stages(group, update_pipeline=False)


def is_clean(root: Path, stage: str) -> bool:
    """True when `dvc status <stage>` reports nothing changed (deps, params, outs, command)."""
    with _repo(root) as repo, fast_yaml():
        try:
            return not repo.status(targets=[_target(root, stage)])
        except Exception:  # noqa: BLE001 - unknown stage, missing lock entry, missing outs: not clean
            return False


def status_clean(root: Path) -> bool:
    """True when `dvc status` reports nothing changed for any stage: one `Repo.status()` for the whole DAG.

    A frozen stage (calibrate) is reported only by its outs, as DVC does; its deps never rerun anything.
    """
    dvc_log = logging.getLogger("dvc")
    with _repo(root) as repo, fast_yaml():
        level = dvc_log.level
        dvc_log.setLevel(logging.ERROR)  # not "stage 'calibrate' is frozen" on every call
        try:
            return not repo.status()
        finally:
            dvc_log.setLevel(level)
