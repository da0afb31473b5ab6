"""The whole DAG as one Prefect flow (what `unlearn run` and a schedule run), over the stage functions.

Each Prefect task calls one stage function of `flows.stages` in this process, then records the finished
stage in dvc.lock (`dvc commit`; the timed chain's stages in one batch once the chain ends, flows.stage_guard),
shape (a) of DESIGN.md (`_dvc` says why, with the measurements); a per-method stage that `dvc status` reports
unchanged is not run again. Without `PREFECT_API_URL` the flow runs on Prefect's temporary local server
(`unlearn run` starts it early: flows.temp_server). With `--set` overrides, the run is tracked in MLflow but not
recorded in dvc.lock (the lock must describe params.yaml; use `dvc exp run -S` for that).
With `orchestration.task_runner: dask` the model stages run on Dask workers instead, in a subflow that owns
the `DaskTaskRunner` (flows.remote; flows.workspace says what travels where); the rest is the same.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow

from . import _dvc, prefect_ui, recovery
from .context import StageContext
from .ledger import Ledger, LedgerError
from .locks import hold
from .preflight import check_run
from .runner import is_dask
from .settings import device_name, is_service, load, mask_credentials, quiet_env, registered_model_name
from .stage_guard import record_deferred, record_task, stage_task
from .stages import label
from .tracking import flatten, git_commit, log_parent_summary, owner_tags, setup_mlflow


def _start_parent(root: Path, params: Any, overrides: list[str]) -> str:
    import mlflow
    from mlflow.entities import Param

    exp_id = setup_mlflow(root, params)
    try:
        pending = ([r for r in Ledger(root, params).entries(params.data.name) if r["status"] == "pending"]
                   if is_service(params) else [])
    except LedgerError:  # naming only; version_data reports a bad ledger properly
        pending = []
    what = (f"{len(pending)} deletion request(s)" if pending else f"forget {params.request.kind}="
            f"{getattr(params.request, params.request.kind)}")
    name = f"pipeline · {params.data.name}/{params.model.name} · {what} · {dt.datetime.now():%Y-%m-%d %H:%M}"
    client = mlflow.MlflowClient()
    run = client.create_run(exp_id, run_name=name, tags={
        "pipeline.stage": "pipeline", "launcher": "prefect", "git_commit": git_commit(root),
        "device": device_name(params), "overrides": mask_credentials(" ".join(overrides)), "methods": ",".join(params.unlearn.methods),
        "requests": ",".join(r["hash"] for r in pending), **owner_tags(registered_model_name(params))})
    dumped = {**params.model_dump(exclude={"unlearn"}), "unlearn": params.methods_dump()}
    items = [Param(k, v[:6000]) for k, v in flatten(dumped).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def print_summary(root: Path, params: Any, out: dict[str, Any], total_s: float) -> None:
    """What `unlearn run` prints after the flow: the results and gates, stage times, where to look next."""
    import mlflow

    from .records import StageRun
    from .settings import RUNS_DIR, tracking_uri

    print(out["promotion"].table)
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in out["stages"].items()))
    runs = {role: StageRun.read(root / RUNS_DIR / f"{role}.json").source for role in ("base", "oracle")}
    print(f"base model: {runs['base']}; oracle: {runs['oracle']}")
    print(f"pipeline: {total_s:.1f} s (flow body {out['seconds']:.1f} s); MLflow parent run {out['parent_run_id']}")
    uri = mask_credentials(tracking_uri(root, params))
    exp = mlflow.get_experiment_by_name(params.tracking.experiment)  # the UI's model-training view (not GenAI):
    print(f"tracking: {uri} -> mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/#/experiments/"
          f"{exp.experiment_id if exp else ''}/runs?workflowType=machine_learning")
    report = root / RUNS_DIR / "report.html"
    if report.exists():
        print(f"report: {report} (open it in a browser; also on the MLflow parent run)")


def _raise_first_failure(futures: list) -> None:
    """Wait for every task; re-raise the first real failure (not the 'upstream failed' of its dependants)."""
    for f in futures:
        f.wait()
    for f in futures:
        if f.state.is_failed() or f.state.is_crashed():
            f.result()  # raises the task's own exception


# Task runner: Prefect's default ThreadPoolTaskRunner. The timed stages (base, oracle, each unlearn[m] and
# each of its other seeds, unlearn[m/seed-s]) are chained so they never share the machine: the oracle's time is the speedup's denominator and each
# method's wall time is a reported metric. Overlapping them saved only ~4 s of a 37 s flow body (4 methods,
# 2 cores) but made the timings meaningless (finetune showed 1.5x instead of ~18x). The untimed
# evaluate[m] tasks (each scoring its method's seeds) run concurrently after the last unlearn. On Dask
# (flows.remote) the same order holds, stage by stage on whichever worker is free; tasks there exchange
# records, files and URIs, never models or tensors (flows.runner says why Dask and not Ray).
@flow(name="unlearning_pipeline", log_prints=False)
def unlearning_pipeline(root: str = ".", params_path: str = "params.yaml",
                        overrides: list[str] | None = None, wait: bool = False) -> dict[str, Any]:
    """Process pending deletion requests (or the params' request): version, train, unlearn, evaluate, promote.

    One run at a time: the project lock and the registered model's lease are held for the whole run
    (`flows.locks.hold`), then runs a dead process left RUNNING are closed (`flows.recovery`).

    Args:
        root: the project folder (params.yaml, data/, dvc.yaml).
        params_path: params file, relative to `root`.
        overrides: `section.key=value` overrides (values parsed as YAML).
        wait: wait for another run that holds the lock or lease, instead of failing (`--wait`).

    Returns:
        `{"parent_run_id", "promotion", "stages": {name: seconds}, "base", "oracle", "seconds"}`.
    """
    quiet_env()
    prefect_ui.send_run_logs()
    os.environ["UNLEARN_LAUNCHER"] = "prefect"
    overrides = list(overrides or [])
    path = Path(root).resolve()
    params = load(path, params_path, overrides)  # validated once, here
    check_run(path, params)  # request vs dataset, devices, tracking store: before the parent run exists
    with hold(path, params, "unlearn run", wait=wait):
        recovery.close_orphans(path, params)
        return _pipeline(path, params, overrides)


def _pipeline(path: Path, params: Any, overrides: list[str]) -> dict[str, Any]:
    """The flow body under the locks: the parent run, the stage tasks, the parent's status."""
    import mlflow

    from unlearning.console import Console

    record = _dvc.enabled(path) and not overrides
    t0 = time.perf_counter()
    parent = _start_parent(path, params, overrides)
    status = "FAILED"
    methods, more_seeds = params.unlearn.methods, params.evaluate.seeds[1:]
    console = Console()
    console.plan(3 + (2 + len(more_seeds)) * len(methods) + 1, "pipeline stages")

    def logged(event: dict[str, Any]) -> None:
        """Every stage's events, labelled by stage; a finished stage advances the overall bar."""
        name = event.pop("label", None) or event.get("stage")
        if "done" in event or "unchanged" in event:
            console.say(event.get("done") or f"unchanged ({event['unchanged']})", label=name)
            console.advance()
            return
        console.log_fn(name)(event)

    ctx = StageContext(path, params, parent, logged)
    try:
        results = _on_dask(ctx, record) if is_dask(params) else _on_threads(ctx, record)
        decision = results["register_and_promote"]["record"]
        prefect_ui.log_decision(decision)
        prefect_ui.publish(decision, parent)
        log_parent_summary(path, params, parent, decision)
        split = results["version_data"]["record"]
        client = mlflow.MlflowClient()
        for key, value in split.lineage().items():
            client.set_tag(parent, key, value)
        status = "FINISHED"
        prefect_ui.run_logger().info("pipeline finished in %.1f s; MLflow parent run %s", time.perf_counter() - t0,
                                     parent)
        return {"parent_run_id": parent, "promotion": decision,
                "stages": {k: r["seconds"] for k, r in results.items()},
                "timings": {k: r["timings"] for k, r in results.items() if "timings" in r},  # on Dask workers
                "base": results["train_base"]["record"], "oracle": results["retrain_oracle"]["record"],
                "seconds": time.perf_counter() - t0}
    finally:
        console.close()
        client = mlflow.MlflowClient()
        client.log_metric(parent, "pipeline/seconds", time.perf_counter() - t0)
        client.set_terminated(parent, status)


def _on_threads(ctx: StageContext, record: bool) -> dict[str, dict[str, Any]]:
    """Every stage a task of this process (Prefect's thread pool); label -> the task's result."""
    methods, more_seeds = ctx.params.unlearn.methods, ctx.params.evaluate.seeds[1:]
    data = stage_task.submit(ctx, "version_data", record=record)
    # The timed chain (one stage at a time): its dvc.lock records wait for its end (stage_guard.record_deferred).
    base = stage_task.submit(ctx, "train_base", record=record, upstream=[data], defer=True)
    oracle = stage_task.submit(ctx, "retrain_oracle", record=record, upstream=[base], defer=True)
    models, seeded, previous = {}, {}, oracle
    for m in methods:  # one task per (method, unlearning seed); the first seed's is the registered version
        models[m] = previous = stage_task.with_options(task_run_name=label("unlearn", m)).submit(
            ctx, "unlearn", m, record=record, upstream=[base, previous], defer=True)
        for s in more_seeds:
            seeded[m, s] = previous = stage_task.with_options(task_run_name=label("unlearn_seed", m, s)).submit(
                ctx, "unlearn_seed", m, record=record, upstream=[models[m], previous], seed=s, defer=True)
    recorded = record_task.submit(ctx, upstream=[previous])  # beside the evaluate stages
    evals = {m: stage_task.with_options(task_run_name=label("evaluate", m)).submit(
        ctx, "evaluate", m, record=record, upstream=[models[m], *(seeded[m, s] for s in more_seeds), oracle,
                                                     previous]) for m in methods}
    promote = stage_task.submit(ctx, "register_and_promote", record=record, upstream=list(evals.values()))
    futures = {"version_data": data, "train_base": base, "retrain_oracle": oracle,
               **{label("unlearn", m): f for m, f in models.items()},
               **{label("unlearn_seed", m, s): f for (m, s), f in seeded.items()},
               **{label("evaluate", m): f for m, f in evals.items()}, "register_and_promote": promote}
    try:
        _raise_first_failure([*futures.values(), recorded])
    finally:
        record_deferred(ctx)  # a chain that failed part-way: what finished is recorded all the same
    return {k: f.result() for k, f in futures.items()}


def _on_dask(ctx: StageContext, record: bool) -> dict[str, dict[str, Any]]:
    """The model stages on Dask workers (flows.remote), in a subflow that owns the DaskTaskRunner."""
    from .remote import on_dask

    return on_dask(ctx, record)
