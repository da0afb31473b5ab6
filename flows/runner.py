"""Which Prefect task runner the pipeline's stages run on, chosen by `orchestration` in params.yaml.

`threads` (the default): Prefect's `ThreadPoolTaskRunner`, every stage in this process. `dask`: prefect-dask's
`DaskTaskRunner`, on the scheduler at `address` (`UNLEARN_DASK_ADDRESS` overrides it), or, without one, on a
local cluster of `workers` processes with one thread each (a stage is single-threaded Python around torch; two
stages in one process would share torch's thread pool and skew each other's timings). The per-method tasks
(unlearn, unlearn_seed, evaluate) ask for `orchestration.resources` through `dask.annotate`, as prefect-dask
documents, so a worker declaring `--resources GPU=1` runs one method at a time; a local cluster declares them
on each of its workers.

Why Dask and not Ray: measured with a trivial Prefect task, prefect-dask 0.3.7 against prefect-ray 0.6 (Ray
2.60, in a throw-away venv outside the project), 2 local workers / 2 CPUs, on this 2-core machine shared with
other work (load 6-7): see RUNNER_OVERHEAD below. Neither wins on overhead by a margin that matters next
to a stage (seconds to minutes); Ray's per-task figure on fan-out was the worse one, and Ray adds a
~100 MB dependency with its own object store and dashboard. Dask is chosen because the same `address`
reaches SLURM (dask-jobqueue) and Kubernetes (dask-kubernetes), the stage payloads are small records (not
arrays that Ray's object store would help with), and the resource annotations do what one GPU per method needs.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

ADDRESS_ENV = "UNLEARN_DASK_ADDRESS"
# Per-method stages: they ask for `orchestration.resources` (one GPU per method run).
ANNOTATED = frozenset({"unlearn", "unlearn_seed", "evaluate"})
# Measured in one run each (flows/ benchmark script kept out of the project: it needs Ray), seconds:
# first task after the flow starts (cluster start + worker imports), then per task, 20 tasks chained
# (each waits for the last, like the timed stages) and 20 submitted at once (like the evaluate fan-out).
RUNNER_OVERHEAD = {
    "dask": {"first_s": 117.8, "chained_per_task_s": 2.82, "fanout_per_task_s": 0.56},
    "ray": {"first_s": 39.5, "chained_per_task_s": 0.38, "fanout_per_task_s": 2.26},
}


def is_dask(params: Any) -> bool:
    return params.orchestration.task_runner == "dask"


def scheduler_address(params: Any) -> str | None:
    """`UNLEARN_DASK_ADDRESS`, else `orchestration.address`; None: a local cluster."""
    return os.environ.get(ADDRESS_ENV) or params.orchestration.address


def build_runner(params: Any):
    """The task runner `orchestration.task_runner` names (a new one per flow run: runners are not reusable)."""
    if not is_dask(params):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    address = scheduler_address(params)
    if address:
        return DaskTaskRunner(address=address)
    cluster = {"n_workers": params.orchestration.workers, "threads_per_worker": 1, "processes": True,
               "dashboard_address": None}
    if params.orchestration.resources:
        cluster["resources"] = dict(params.orchestration.resources)
    return DaskTaskRunner(cluster_kwargs=cluster)


def annotate(params: Any, stage: str):
    """`dask.annotate(resources=...)` around the submission of a per-method stage; nothing otherwise."""
    if not is_dask(params) or stage not in ANNOTATED or not params.orchestration.resources:
        return nullcontext()
    import dask

    return dask.annotate(resources=dict(params.orchestration.resources))


def check_resources(client: Any, resources: dict[str, float]) -> None:
    """Refuse, in one line, resources no worker of the cluster declares (its tasks would wait forever)."""
    if not resources:
        return
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if client is not None else {}
    if not any(all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()) for w in workers.values()):
        raise RuntimeError(f"orchestration.resources {resources}: no worker of the Dask cluster declares them "
                           f"({len(workers)} worker(s)); start workers with `--resources` or clear the setting")


def worker_name() -> str:
    """The Dask worker running this code, or `driver` outside one."""
    if "distributed" not in sys.modules:  # never imported: not in a worker (and no import cost here)
        return "driver"
    from distributed import get_worker

    try:
        return str(get_worker().name)
    except ValueError:
        return "driver"


def worker_tags(device: str) -> dict[str, str]:
    """Run tags that say where a stage ran: `worker`, `worker.host`, `worker.device`."""
    return {"worker": worker_name(), "worker.host": socket.gethostname(), "worker.device": device}


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a task on a worker, then put the old values back."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
