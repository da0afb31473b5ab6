"""The whole DAG as one Prefect flow (what `unlearn run` and a schedule run), over the stage functions.

Each Prefect task calls one stage function of `flows.stages` in this process, then records the finished
stage in dvc.lock (`dvc commit`), shape (a) of DESIGN.md (`_dvc` says why, with the measurements); a
per-method stage that `dvc status` reports unchanged is not run again. Without `PREFECT_API_URL` the flow
runs on Prefect's temporary local server. With `--set` overrides, the run is tracked in MLflow but not
recorded in dvc.lock (the lock must describe params.yaml; use `dvc exp run -S` for that).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from . import _dvc, prefect_ui, recovery
from . import _registry as registry
from .context import StageContext
from .faults import crash_point
from .ledger import Ledger, LedgerError
from .locks import hold
from .preflight import check_run
from .profiles import record_profiles
from .records import EvalRecord, Record, SeedRecord, StageRun, UnlearnRecord
from .settings import (
    RECORD_FILE,
    device_name,
    is_service,
    load,
    quiet_env,
    registered_model_name,
    stage_dir,
    tracking_uri,
)
from .stages import address, label, member, run_stage, summary
from .tracking import flatten, git_commit, log_parent_summary, note_reused, owner_tags, setup_mlflow
from .unlearn_seed import seed_dir


def _io_error(task, task_run, state) -> bool:
    """Retry condition: only I/O failures (OSError, sqlite 'database is locked', connection errors)."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception as err:  # noqa: BLE001 - classify, never swallow: the task fails if this says False
        text = f"{type(err).__name__}: {err}".lower()
        return "database is locked" in text or "operationalerror" in text
    return False


IO_RETRY = {"retries": 2, "retry_delay_seconds": 3, "retry_condition_fn": _io_error, "cache_policy": NO_CACHE}
# Stages skipped when `dvc status` is clean.
PRIOR = {"unlearn": UnlearnRecord, "unlearn_seed": SeedRecord, "evaluate": EvalRecord}


def _unchanged(ctx: StageContext, stage: str, method: str, record: bool, seed: int | None = None) -> Record | None:
    """The stored record of a per-method (per-seed) stage that DVC reports unchanged and whose model is still in
    the registry (same version, same checkpoint SHA-256: a record from another tracking store does not count)."""
    path = (stage_dir(ctx.root, stage, method) if seed is None else seed_dir(ctx.root, method, seed)) / RECORD_FILE
    if not record or not path.exists() or not _dvc.is_clean(ctx.root, address(stage, method, seed)):
        return None
    try:
        prev = PRIOR[stage].read(path)
        setup_mlflow(ctx.root, ctx.params)
        version = getattr(prev, "version", None) or getattr(prev, "model_version", None)
        if version:
            tags = registry.version_tags(registered_model_name(ctx.params), version)
            if tags.get(registry.CHECKSUM_TAG) != prev.checkpoint_sha256:
                return None
    except Exception:  # noqa: BLE001 - an unreadable record or a lost version means: run it again
        return None
    runs_file = StageRun.path(ctx.root, stage, member(method, seed))
    last = StageRun.read(runs_file) if runs_file.exists() else None
    made_by = (last.reused_from or last.run_id) if last is not None else None
    # No run of its own: the parent run lists it (the runs that made its outputs keep their figures).
    note_reused(ctx.parent_run_id, f"{label(stage, method, seed)} (unchanged)"
                + (f" from run {made_by}" if made_by else ""))
    StageRun(stage=stage, source="unchanged", tracking_uri=tracking_uri(ctx.root, ctx.params),
             reused_from=made_by).write(runs_file)
    return prev


@task(name="stage", task_run_name="{stage}", **IO_RETRY)
def stage_task(ctx: StageContext, stage: str, method: str | None = None, record: bool = True,
               upstream: list[Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run one stage (or keep its unchanged outputs), record it in dvc.lock; `upstream` only orders tasks."""
    t0 = time.perf_counter()
    name = label(stage, method, seed)
    run_log = prefect_ui.run_logger()
    run_log.info("%s: started", name)
    prev = _unchanged(ctx, stage, method, record, seed) if stage in PRIOR and method else None
    if prev is not None:
        if ctx.log is not None:
            ctx.log({"stage": name, "unchanged": "dvc status clean, outputs kept"})
        run_log.info("%s: reused, dvc status unchanged: outputs kept (%.1f s)", name, time.perf_counter() - t0)
        return {"record": prev, "seconds": time.perf_counter() - t0, "unchanged": True}

    def log(event: dict[str, Any]) -> None:
        if ctx.log is not None:
            ctx.log({**event, "label": name})

    out = run_stage(StageContext(ctx.root, ctx.params, ctx.parent_run_id, log), stage, method, seed)
    if record:
        _dvc.commit(ctx.root, [address(stage, method, seed)])
        if stage == "version_data":
            _dvc.push_if_remote(ctx.root, "data")
            record_profiles(ctx.root)  # the calibration profiles, a dependency of unlearn@<m> (flows.profiles)
    crash_point(f"after:{name}")
    if ctx.log is not None:
        ctx.log({"stage": name, "done": summary(out)})
    how = prefect_ui.how_it_ran(ctx.root, stage, member(method, seed))
    run_log.info("%s: finished in %.1f s%s: %s", name, time.perf_counter() - t0, f", {how}" if how else "",
                 summary(out))
    return {"record": out, "seconds": time.perf_counter() - t0, "unchanged": False}


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
        "device": device_name(params), "overrides": " ".join(overrides), "methods": ",".join(params.unlearn.methods),
        "requests": ",".join(r["hash"] for r in pending), **owner_tags(registered_model_name(params))})
    dumped = {**params.model_dump(exclude={"unlearn"}), "unlearn": params.methods_dump()}
    items = [Param(k, v[:6000]) for k, v in flatten(dumped).items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


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
# evaluate[m] tasks (each scoring its method's seeds) run concurrently after the last unlearn. Tasks exchange records (ids, URIs), never
# models or tensors, so a Dask or Ray task runner can spread methods over machines.
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
        data = stage_task.submit(ctx, "version_data", record=record)
        base = stage_task.submit(ctx, "train_base", record=record, upstream=[data])
        oracle = stage_task.submit(ctx, "retrain_oracle", record=record, upstream=[base])
        models, seeded, previous = {}, {}, oracle
        for m in methods:  # one task per (method, unlearning seed); the first seed's is the registered version
            models[m] = previous = stage_task.with_options(task_run_name=label("unlearn", m)).submit(
                ctx, "unlearn", m, record=record, upstream=[base, previous])
            for s in more_seeds:
                seeded[m, s] = previous = stage_task.with_options(task_run_name=label("unlearn_seed", m, s)).submit(
                    ctx, "unlearn_seed", m, record=record, upstream=[models[m], previous], seed=s)
        evals = {m: stage_task.with_options(task_run_name=label("evaluate", m)).submit(
            ctx, "evaluate", m, record=record, upstream=[models[m], *(seeded[m, s] for s in more_seeds), oracle,
                                                         previous]) for m in methods}
        promote = stage_task.submit(ctx, "register_and_promote", record=record, upstream=list(evals.values()))
        futures = {"version_data": data, "train_base": base, "retrain_oracle": oracle,
                   **{label("unlearn", m): f for m, f in models.items()},
                   **{label("unlearn_seed", m, s): f for (m, s), f in seeded.items()},
                   **{label("evaluate", m): f for m, f in evals.items()}, "register_and_promote": promote}
        _raise_first_failure(list(futures.values()))
        decision = promote.result()["record"]
        prefect_ui.log_decision(decision)
        prefect_ui.publish(decision, parent)
        log_parent_summary(path, params, parent, decision)
        split = data.result()["record"]
        client = mlflow.MlflowClient()
        for key, value in split.lineage().items():
            client.set_tag(parent, key, value)
        status = "FINISHED"
        prefect_ui.run_logger().info("pipeline finished in %.1f s; MLflow parent run %s", time.perf_counter() - t0,
                                     parent)
        return {"parent_run_id": parent, "promotion": promote.result()["record"],
                "stages": {k: f.result()["seconds"] for k, f in futures.items()},
                "base": base.result()["record"], "oracle": oracle.result()["record"],
                "seconds": time.perf_counter() - t0}
    finally:
        console.close()
        client = mlflow.MlflowClient()
        client.log_metric(parent, "pipeline/seconds", time.perf_counter() - t0)
        client.set_terminated(parent, status)
