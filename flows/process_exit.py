"""The end of an `unlearn` process: what Python's shutdown guarantees, without its module teardown.

After `unlearn run` printed its result, Python's own shutdown (tearing down the modules of torch, MLflow,
Prefect, DVC, SQLAlchemy and their objects) took another 3.1 s at load 2.5 (0.2 s as here). Here the
guarantees are kept in Python's order (non-daemon threads joined, `atexit` handlers run: logging, MLflow's
async queue, Prefect's workers, temporary files; stdout and stderr flushed), then the process ends.
Only for the console command (`flows.cli.entry`: pyproject's `unlearn` script, `python -m flows.cli`): an
in-process caller (a test) of `flows.cli.main` gets its return value as before.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once threads, `atexit` handlers and the standard streams are done."""
    for callback in reversed(getattr(threading, "_threading_atexits", [])):  # as threading._shutdown: first
        callback()  # what stops executors' worker threads and processes (concurrent.futures), then the joins
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to deliver
            pass
    os._exit(code)
