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
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path

_lock = threading.RLock()


def enabled(root: Path) -> bool:
    """Whether the project is a DVC repo (`.dvc/` present)."""
    return (root / ".dvc").is_dir()


@contextmanager
def _repo(root: Path):
    """A fresh `Repo` with the process inside `root`: DVC resolves paths (stage cache, targets) against
    the cwd. Held under the lock, so only DVC calls see the change; the stages use absolute paths."""
    from dvc.repo import Repo

    # DVC prints its log lines twice under another root logger unless told otherwise (STACK.md).
    logging.getLogger("dvc").setLevel(logging.WARNING)
    with _lock:
        old = os.getcwd()
        os.chdir(root)
        repo = Repo(str(root))
        try:
            yield repo
        finally:
            repo.close()
            os.chdir(old)


def _target(root: Path, stage: str) -> str:
    """`<root>/dvc.yaml:<stage>`: DVC resolves bare stage names against the current directory."""
    return f"{root / 'dvc.yaml'}:{stage}"


def push_if_remote(root: Path, target: str = "data") -> bool:
    """`dvc push <target>` when a default DVC remote is configured (DESIGN: the data version travels)."""
    with _repo(root) as repo:
        if not repo.config.get("core", {}).get("remote"):
            return False
        repo.push(targets=[str(root / target)])
        return True


def commit(root: Path, stages: list[str]) -> None:
    """Record finished stages in dvc.lock (`dvc commit --force <stage>`): their deps, params and outs."""
    if not stages:
        return
    with _repo(root) as repo:
        for stage in stages:
            repo.commit(_target(root, stage), force=True)


def is_clean(root: Path, stage: str) -> bool:
    """True when `dvc status <stage>` reports nothing changed (deps, params, outs, command)."""
    with _repo(root) as repo:
        try:
            return not repo.status(targets=[_target(root, stage)])
        except Exception:  # noqa: BLE001 - unknown stage, missing lock entry, missing outs: not clean
            return False
