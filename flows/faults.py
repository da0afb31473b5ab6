"""Crash points for fault-injection tests: `UNLEARN_CRASH_AT=<point>` SIGKILLs this process at that point.

A kill, not an exception: nothing after it runs (no `finally`, no atexit), as when a machine dies. The
points are the stage boundaries (`after:<stage label>`), `unlearn:registered` (a version registered, its
record not yet written) and `promote:alias` (production moved, nothing rolled forward yet).
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("UNLEARN_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
