"""A new sqlite MLflow store: opened by one process at a time, and created from a pre-migrated template.

MLflow builds a new sqlite store by running every schema migration since its first release: 2.2-2.4 s on
the 2-core CPU (4-7 s under load), paid by every fresh clone's first `unlearn run` and by every test that
opens a new store. The schema depends only on the MLflow version, so `make` migrates one empty database
per venv right after installing it (`python -m flows.sqlite_store`) and a new store starts as a copy of it
(0.02 s). The copy holds no experiment: MLflow adds its default experiment 0 with the new store's own
artifact root when the store is first opened, as it does after migrating. Without a template (a venv not
built by `make`, another MLflow version) MLflow migrates as before.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

SQLITE = "sqlite:///"
TEMPLATE_ENV = "UNLEARN_MLFLOW_TEMPLATE"  # another template file (a missing one: MLflow migrates every store)


def template_path() -> Path:
    """Where this environment keeps its migrated empty store: inside the venv, keyed by MLflow's version."""
    if os.environ.get(TEMPLATE_ENV):
        return Path(os.environ[TEMPLATE_ENV])
    return Path(sys.prefix) / "var" / "unlearn" / f"mlflow-{metadata.version('mlflow')}-empty.db"


def build_template(path: Path | None = None) -> Path:
    """Migrate an empty sqlite database to MLflow's current schema at `path` (written whole, then moved)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path = path or template_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".db", dir=path.parent)
    os.close(fd)  # sqlite takes an empty file as an empty database
    try:
        engine = sqlalchemy.create_engine(f"{SQLITE}{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, path)
    except BaseException:  # a failed migration leaves nothing behind
        os.unlink(tmp)
        raise
    return path


def seed(db: Path, template: Path | None = None) -> bool:
    """Create the store file `db` as a copy of the template when `db` does not exist; True if it did.

    The copy is linked into place only if `db` is still absent, so a store created meanwhile by a process
    that did not take `first_touch` (`unlearn status`) is never overwritten."""
    try:
        template = template or template_path()
    except metadata.PackageNotFoundError:
        return False
    if db.name == ":memory:" or db.exists() or not template.is_file() or not db.parent.is_dir():
        return False
    fd, tmp = tempfile.mkstemp(suffix=".db", dir=db.parent)
    os.close(fd)
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, db)
        return True
    except OSError:  # created meanwhile, or a file system without hard links: MLflow creates it
        return False
    finally:
        os.unlink(tmp)


@contextmanager
def first_touch(uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite store between processes (a flock on its folder), and start a
    new store from the template (`seed`).

    MLflow creates and migrates a new sqlite store on first use; two processes doing it at once (two
    clones sharing one new `mlflow.db`) made the second die in the migration (`duplicate column`).
    """
    import fcntl

    if not uri.startswith(SQLITE):
        yield
        return
    db = Path(uri[len(SQLITE):])
    try:
        fd = os.open(db.parent, os.O_RDONLY)
    except OSError:  # no such folder: MLflow says so itself
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: go on unserialised, as before
            pass
        seed(db)
        yield
    finally:
        os.close(fd)


if __name__ == "__main__":  # `make`: once per venv, after installing it
    print(f"MLflow store template: {build_template()}")
