"""Figures drawn in a worker process while the evaluate stages go on.

The ten evaluate stages of a flow run at once in threads of one process, and their 30 figures held its GIL
for 1.7 s of a 5.5 s evaluate phase (py-spy, cold run) while scoring, MLflow and DVC waited for it. A run
starts one worker process (`running()`); it imports matplotlib while the models train and then draws
the figures on the other core. Drawing functions take plain data (arrays, lists, paths), never models.
Without a worker (a stage run by `dvc repro`, a Dask worker, a direct call) or once it broke, a figure is
drawn in the caller, as before.

Only `unlearn run` starts one: a spawned process imports the parent's main module again, which is safe for
our commands (and pytest), but would run the script of a user who calls the flow from an unguarded one.
The worker gets SIGTERM when the thread that started it dies (Linux), so a killed run leaves no worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _warm(parent: int) -> None:
    """The worker's start: tied to the run's life, then what every figure needs, imported before the first
    one is asked for (the drawing functions' module, flows.plots, comes with the first figure)."""
    from .recovery import die_with_parent

    die_with_parent(parent)
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


@contextmanager
def running(enabled: bool = True) -> Iterator[None]:
    """One worker for the block (a flow run): spawned at once, stopped at the end, its figures finished.
    `enabled=False`: none (the evaluate stages run elsewhere: on Dask workers)."""
    global _pool
    import multiprocessing

    if not enabled:
        yield
        return

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_warm,
                               initargs=(os.getpid(),))
    pool.submit(int)  # spawn now, while the models train, not at the first figure
    with _lock:
        _pool = pool
    try:
        yield
    finally:
        with _lock:
            _pool = None
        pool.shutdown(wait=True)


class Drawing:
    """A figure being drawn: `result()` waits for it, and draws it here if the worker died meanwhile."""

    def __init__(self, fn: Callable[..., Any], args: tuple, future: Future) -> None:
        self.fn, self.args, self.future = fn, args, future

    def result(self) -> Any:
        try:
            return self.future.result()
        except BrokenProcessPool:
            return self.fn(*self.args)


def draw(fn: Callable[..., Any], *args: Any) -> Drawing:
    """`fn(*args)` (a module-level function, so the worker can find it) in the worker when one runs."""
    with _lock:
        pool = _pool
    if pool is not None:
        try:
            return Drawing(fn, args, pool.submit(fn, *args))
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile: draw here
            pass
    done: Future = Future()
    done.set_result(fn(*args))  # drawn now, as a direct call would (an error is raised here)
    return Drawing(fn, args, done)
