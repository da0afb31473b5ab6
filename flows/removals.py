"""What a stage on a worker deleted under outputs/, including files the worker never had.

A workspace holds the small files and the checkpoints a stage reads, not the stage's own old checkpoint or
images. A stage that deletes one of those (a method that cannot serve a request of sample ids unlinks its
old `model.pt`, a seed dropped from `evaluate.more_seeds` loses its folder) deletes nothing on the worker,
so a before/after comparison of the workspace cannot see it, and the driver would `dvc commit` a stale
checkpoint, one trained on data a deletion request removed, where a local run leaves none. `recording`
listens to Python's audit events for removals (`os.remove`, `os.rmdir`, `shutil.rmtree`: what
`Path.unlink`, `os.unlink` and `shutil.rmtree` raise) made by this thread under the workspace's outputs/,
and the bundle lists them for the driver to delete too.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REMOVALS = ("os.remove", "os.rmdir", "shutil.rmtree")
_local = threading.local()
_installed = threading.Lock()
_hooked: list[bool] = []


def _hook(event: str, args: tuple) -> None:
    seen = getattr(_local, "seen", None)
    if seen is None or event not in REMOVALS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    seen.append(os.fsdecode(args[0]))


@contextmanager
def recording(ws: Path) -> Iterator[list[str]]:
    """Collect, into the yielded list, the paths (relative to `ws`) this thread removes under `ws`/outputs."""
    with _installed:
        if not _hooked:  # an audit hook cannot be removed: install one per process, active per thread
            sys.addaudithook(_hook)
            _hooked.append(True)
    outputs = (Path(ws) / "outputs").resolve()
    found: list[str] = []
    _local.seen = []
    try:
        yield found
    finally:
        seen, _local.seen = _local.seen, None
        for raw in seen:
            path = Path(raw) if os.path.isabs(raw) else Path.cwd() / raw
            path = path.parent.resolve() / path.name  # the link itself, not its target
            if path.is_relative_to(outputs) and path != outputs:
                rel = path.relative_to(Path(ws).resolve()).as_posix()
                if rel not in found:
                    found.append(rel)


def remove(root: Path, removed: list[str], keep: set[str]) -> None:
    """Remove `removed` (paths relative to `root`) there too; a folder loses all but the files in `keep` (what
    the stage wrote again after removing it)."""
    for rel in removed:
        path = root / rel
        if not path.is_dir() or path.is_symlink():
            path.unlink(missing_ok=True)
            continue
        for inner in sorted(path.rglob("*"), reverse=True):  # children before their folder
            if inner.is_dir() and not inner.is_symlink():
                if not any(inner.iterdir()):
                    inner.rmdir()
            elif inner.relative_to(root).as_posix() not in keep:
                inner.unlink()
        if not any(path.iterdir()):
            path.rmdir()
