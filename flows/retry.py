"""Prefect's retry settings for stage tasks, on the driver or a worker: retry on I/O errors only.

A leaf module (Prefect only), so that the stage task (flows.stage_guard) and the tasks sent to Dask workers
(flows.remote, flows.calibrate_remote) share it without importing one another.
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE


def io_error(task, task_run, state) -> bool:
    """Retry condition: only I/O failures (OSError, sqlite 'database is locked', connection errors)."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception as err:  # noqa: BLE001 - classify, never swallow: the task fails if this says False
        text = f"{type(err).__name__}: {err}".lower()
        return "database is locked" in text or "operationalerror" in text
    return False


IO_RETRY = {"retries": 2, "retry_delay_seconds": 3, "retry_condition_fn": io_error, "cache_policy": NO_CACHE}
