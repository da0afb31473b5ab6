"""`unlearn calibrate` on Dask workers (`orchestration.task_runner: dask`): one task per method's search.

The driver plans the calibration (`plan_calibration`: methods, universe, proxies), pushes the data version
to the DVC remote, and sends each method to a worker as a `calibrate[<method>]` task that asks for
`orchestration.resources` (one GPU runs one search at a time). A worker builds a workspace as a pipeline stage
does (`flows.workspace`: the small files, `data/` pulled by its hash), rebuilds the same plan from the same
inputs, trains the proxy base and oracles once (cached under its own folder by content key, so its next
method loads them), runs the search and the held-out scoring, and returns the outcome: a small record. The
driver writes the profile, logs the trials as child runs (tagged with the worker that ran them) and commits.
Trial times are measured on the worker, where the method ran. Nothing reads the driver's folder.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task

from .context import StageContext
from .retry import IO_RETRY
from .runner import annotate, worker_name
from .workspace import Payload, new_payload, on_worker, push_data, require_remote, worker_base


def _search_on_worker(payload: Payload, excluded: list[list[int]], data_version: str) -> dict[str, Any]:
    """On a Dask worker: one method's search on proxy models trained (or cached) in this worker's folder."""
    from unlearning.calibration.core import calibrate_method, plan_calibration, proxy_cases

    from .profiles import rooted
    from .settings import device_name
    from .version_data import load_split

    t0 = time.perf_counter()
    with on_worker(payload) as ws:
        split, _ = load_split(ws)
        params = rooted(payload.params, ws)
        plan = plan_calibration(params, split, data_version=data_version, methods=[str(payload.method)],
                                excluded=excluded)
        t1 = time.perf_counter()
        cases = proxy_cases(params, plan, worker_base() / "calibration-models")
        t2 = time.perf_counter()
        outcome = calibrate_method(params, plan, str(payload.method), cases)
        t3 = time.perf_counter()
    return {"outcome": outcome, "worker": worker_name(), "device": device_name(payload.params),
            "timings": {"workspace_s": t1 - t0, "proxy_models_s": t2 - t1, "search_s": t3 - t2}}


# Importable by its own name, so Dask pickles it by reference (see flows.remote.worker_stage).
worker_search = task(name="calibrate on a worker", **IO_RETRY)(_search_on_worker)


def _searches(payloads: dict[str, Payload], excluded: list[list[int]], data_version: str,
              resources: dict[str, float], run_id: str) -> dict[str, dict[str, Any]]:
    """Every method's search at once, spread over the workers; method -> what its worker returned.

    Each finished search is reported as it lands (which worker, how long, an ETA for the rest)."""
    from prefect.context import FlowRunContext

    from unlearning.console import estimate_eta, format_duration

    from .runner import check_resources

    check_resources(FlowRunContext.get().task_runner.client, resources)
    futures = {}
    for name, payload in payloads.items():
        with annotate(payload.params, "calibrate"):
            futures[name] = worker_search.with_options(task_run_name=f"calibrate[{name}]").submit(
                payload, excluded, data_version)
    say, t0, got = _logs.get(run_id), time.perf_counter(), {}
    while len(got) < len(futures):
        for name in [n for n, f in futures.items() if n not in got and f.wrapped_future.done()]:
            got[name] = out = futures[name].result()  # a failed search raises here, as the flow's error
            elapsed = time.perf_counter() - t0
            eta = estimate_eta(len(got), len(futures), elapsed)
            if say is not None:
                say({"stage": f"calibrate[{name}]", "done": f"{len(got)}/{len(futures)} on {out['worker']} "
                     f"after {format_duration(elapsed)}", "eta": format_duration(eta)})
        time.sleep(0.2)
    return got


_logs: dict[str, Any] = {}  # calibration run -> the driver's console log (not picklable: kept out of the subflow)


searches_on_dask = flow(name="calibrate_on_dask", log_prints=False, validate_parameters=False)(_searches)


def dask_methods(ctx: StageContext, run_id: str, excluded: list[list[int]], data_version: str):
    """A `run_methods` for `unlearning.calibration.core.calibrate` that runs each search on a Dask worker.

    Its result also keeps, per method, the worker and device that ran it (`ran_on`), for the trial runs' tags.
    """
    from .runner import build_runner, prefect_api_for_workers
    from .settings import tracking_uri
    from .tracking import git_commit

    remote = require_remote(ctx.root, ctx.params)
    ran_on: dict[str, dict[str, str]] = {}

    def run_methods(plan: Any) -> dict[str, Any]:
        push_data(ctx.root, remote)
        uri, commit = tracking_uri(ctx.root, ctx.params), git_commit(ctx.root)
        payloads = {name: new_payload(ctx.root, ctx.params, "calibrate", name, None, parent_run_id=run_id, uri=uri,
                                      remote=remote, commit=commit) for name in plan.todo}
        sub = searches_on_dask.with_options(task_runner=build_runner(ctx.params))
        _logs[run_id] = ctx.log
        try:
            with prefect_api_for_workers(ctx.params):
                got = sub(payloads, excluded, data_version, dict(ctx.params.orchestration.resources), run_id)
        finally:
            _logs.pop(run_id, None)
        for name, out in got.items():
            ran_on[name] = {"worker": out["worker"], "worker.device": out["device"]}
            if ctx.log is not None:
                ctx.log({"stage": f"calibrate[{name}]", "worker": out["worker"],
                         **{k: round(v, 2) for k, v in out["timings"].items()}})
        return {name: out["outcome"] for name, out in got.items()}

    run_methods.ran_on = ran_on  # type: ignore[attr-defined]
    return run_methods

