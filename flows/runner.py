"""Which Prefect task runner the pipeline's stages run on, chosen by `orchestration` in params.yaml.

`threads` (the default): Prefect's `ThreadPoolTaskRunner`, every stage in this process. `dask`: prefect-dask's
`DaskTaskRunner`, on the scheduler at `address` (`UNLEARN_DASK_ADDRESS` overrides it), or, without one, on a
local cluster of `workers` processes with one thread each (a stage is single-threaded Python around torch; two
stages in one process would share torch's thread pool and skew each other's timings). The per-method tasks
(unlearn, unlearn_seed, evaluate) ask for `orchestration.resources` through `dask.annotate`, as prefect-dask
documents, so a worker declaring `--resources GPU=1` runs one method at a time; a local cluster declares them
on each of its workers.

Why Dask and not Ray: measured with a trivial Prefect task through prefect-dask 0.3.7 and prefect-ray 0.6 (Ray
2.60, in a throw-away venv outside the project), 2 local workers on this shared 2-core machine, one run each
(RUNNER_OVERHEAD): the whole flow, cluster start included, 41.6 s on Dask and 50.6 s on Ray; per task, 0.49 s
against 0.29 s chained (each waits for the last, as the timed stages do) and 0.28 s against 0.57 s submitted
at once (as the evaluate tasks are). Neither wins by a margin that matters next to a stage (seconds to
minutes). Dask is chosen because the same `address` reaches SLURM (dask-jobqueue) and Kubernetes
(dask-kubernetes), its per-task resources are what one GPU per method needs, the payloads are small records
(no arrays for Ray's object store to help with), and Ray would add a large dependency with its own object
store and dashboard.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

ADDRESS_ENV = "UNLEARN_DASK_ADDRESS"
# Per-method stages and calibration searches: they ask for `orchestration.resources` (one GPU per method run).
ANNOTATED = frozenset({"unlearn", "unlearn_seed", "evaluate", "calibrate"})
# Seconds, one run each (the script lives outside the project: it needs Ray): the flow with 41 trivial tasks,
# cluster start included; the first task; then per task, 20 chained and 20 submitted at once. Workers were
# pointed at the driver's temporary Prefect server (`prefect_api_for_workers`); without that, Dask's first task
# took 117.8 s and each chained one 2.82 s.
RUNNER_OVERHEAD = {
    "dask": {"flow_s": 41.6, "first_s": 22.9, "chained_per_task_s": 0.49, "fanout_per_task_s": 0.28},
    "ray": {"flow_s": 50.6, "first_s": 7.8, "chained_per_task_s": 0.29, "fanout_per_task_s": 0.57},
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
    import logging

    from prefect_dask import DaskTaskRunner

    # Quiet as the rest of the run: Dask logs every connection at INFO, and a local cluster's shutdown logs
    # the batched stream its killed workers closed as an error with a traceback (harmless: the run is over).
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # local workers inherit it
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.batched").setLevel(logging.CRITICAL)
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


@contextmanager
def prefect_api_for_workers(params: Any) -> Iterator[None]:
    """Point a local cluster's workers at this process's temporary Prefect server while they start.

    Without `PREFECT_API_URL`, each worker process started a temporary Prefect server of its own, on the same
    PREFECT_HOME database as ours: measured here, the first trivial task took 118 s and each chained one
    2.8 s. Workers inherit the environment they are spawned with; a remote cluster needs PREFECT_API_URL set.
    """
    if not is_dask(params) or scheduler_address(params) or os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    server = SubprocessASGIServer._instances.get(None)
    if get_current_settings().api.url or server is None or not server.running:  # a server is set, or none runs
        yield
        return
    with environ({"PREFECT_API_URL": server.api_url}):
        yield
