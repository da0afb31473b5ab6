"""The pipeline's stages on Dask workers (`orchestration.task_runner: dask`): the driver's side and the task.

The driver runs `version_data` (it writes the data version, pushes it to the DVC remote and reads the ledger)
and `register_and_promote` (the ledger, production, dvc.lock) itself. Each model stage is a Prefect task
on a worker, built as `flows.workspace` describes: the driver checks `dvc status` first (an unchanged stage
is kept, as in a local run), sends the payload, waits, writes the stage's outputs into its checkout and
`dvc commit`s it. The timed stages stay chained, one at a time, as in `flows.pipeline`; the evaluate tasks
then run at once, spread over the workers. Each task reports where its seconds went (`timings`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from . import _dvc, prefect_ui
from .context import StageContext
from .faults import crash_point
from .recovery import close_lost_attempts
from .removals import recording
from .retry import IO_RETRY
from .runner import annotate, worker_name
from .stage_guard import PRIOR, stage_task, unchanged
from .stages import address, label, member, run_stage, summary
from .workspace import (
    Bundle,
    Payload,
    apply,
    needed_checkpoints,
    new_payload,
    on_worker,
    push_data,
    require_remote,
    snapshot,
    upload,
)


def _on_worker(payload: Payload) -> dict[str, Any]:
    """On a Dask worker: build the workspace, run the stage there, upload what it changed."""
    import uuid

    from .tracking import set_lease

    t0 = time.perf_counter()
    with on_worker(payload, {"UNLEARN_LAUNCHER": "prefect", "UNLEARN_GIT_COMMIT": payload.git_commit}) as ws:
        t1 = time.perf_counter()
        before = snapshot(ws)
        if payload.lease:
            set_lease(*payload.lease)
        try:
            ctx = StageContext(ws, payload.params, payload.parent_run_id, None)
            with recording(ws) as deleted:  # also what it removes that this workspace never had
                record = run_stage(ctx, payload.stage, payload.method, payload.seed)
            t2 = time.perf_counter()
            key = f"{address(payload.stage, payload.method, payload.seed)}/{uuid.uuid4().hex[:8]}"
            bundle = upload(ws, before, payload.parent_run_id, key, deleted)
            t3 = time.perf_counter()
        finally:
            if payload.lease:
                set_lease(payload.lease[0], None)
    return {"record": record, "bundle": bundle, "worker": worker_name(),
            "timings": {"workspace_s": t1 - t0, "stage_s": t2 - t1, "upload_s": t3 - t2}}


# The task wraps a function importable under its own name, so Dask pickles it by reference (a decorated
# function's name is the Task, and cloudpickle would copy it by value with what its globals reach).
worker_stage = task(name="stage on a worker", **IO_RETRY)(_on_worker)


class Driver:
    """The driver's side of one flow run on Dask: payloads out, outputs in, dvc.lock written here."""

    def __init__(self, ctx: StageContext, record: bool, remote: str) -> None:
        from .settings import registered_model_name, tracking_uri
        from .tracking import git_commit, lease_id

        self.ctx, self.record, self.remote = ctx, record, remote
        self.uri = tracking_uri(ctx.root, ctx.params)
        self.commit_id = git_commit(ctx.root)
        model = registered_model_name(ctx.params)
        ticket = lease_id(model)
        self.lease = (model, ticket) if ticket else None
        self.origins: dict[str, str] = {}  # checkpoint relpath -> runs:/ URI it was uploaded as, this run

    def _ref(self, rel: str, rec: Any) -> tuple[str, str | None]:
        """Where a worker fetches checkpoint `rel`: its registered model, else a run artifact (uploaded once)."""
        uri = getattr(rec, "model_uri", None)
        if uri:
            return uri, rec.checkpoint_sha256
        if rel not in self.origins:  # made in an earlier run (its stage unchanged): upload it once
            import mlflow

            folder = str(Path("inputs") / Path(rel).parent)
            mlflow.MlflowClient().log_artifact(self.ctx.parent_run_id, str(self.ctx.root / rel), folder)
            self.origins[rel] = f"runs:/{self.ctx.parent_run_id}/inputs/{rel}"
        return self.origins[rel], rec.checkpoint_sha256

    def payload(self, stage: str, method: str | None, seed: int | None) -> Payload:
        root, params = self.ctx.root, self.ctx.params
        checkpoints = {rel: self._ref(rel, rec) for rel, rec in needed_checkpoints(root, params, stage, method).items()}
        return new_payload(root, params, stage, method, seed, parent_run_id=str(self.ctx.parent_run_id), uri=self.uri,
                           remote=self.remote, commit=self.commit_id, checkpoints=checkpoints, lease=self.lease)

    def submit(self, stage: str, method: str | None = None, seed: int | None = None) -> dict[str, Any]:
        """Send one stage to a worker; an unchanged per-method stage is kept here instead (a finished result)."""
        t0 = time.perf_counter()
        if stage in PRIOR and method:
            prev = unchanged(self.ctx, stage, method, self.record, seed)
            if prev is not None:
                self._say(label(stage, method, seed), {"unchanged": "dvc status clean, outputs kept"})
                return {"record": prev, "seconds": time.perf_counter() - t0, "unchanged": True}
        with annotate(self.ctx.params, stage):
            future = worker_stage.with_options(task_run_name=label(stage, method, seed)).submit(
                self.payload(stage, method, seed))
        return {"future": future, "t0": t0, "stage": stage, "method": method, "seed": seed}

    def finish(self, sent: dict[str, Any]) -> dict[str, Any]:
        """Wait for a sent stage; write its outputs into the checkout; record it in dvc.lock."""
        if "future" not in sent:
            return sent
        stage, method, seed = sent["stage"], sent["method"], sent["seed"]
        out = sent["future"].result()
        t0 = time.perf_counter()
        bundle: Bundle = out["bundle"]
        self.origins.update({k: v for k, v in apply(self.ctx.root, bundle, str(self.ctx.parent_run_id)).items()
                             if k.endswith(".pt")})
        t1 = time.perf_counter()
        if self.record:
            _dvc.commit(self.ctx.root, [address(stage, method, seed)])
        name = label(stage, method, seed)
        crash_point(f"after:{name}")
        timings = {**out["timings"], "apply_s": t1 - t0, "commit_s": time.perf_counter() - t1}
        self._say(name, {"done": summary(out["record"])})
        how = prefect_ui.how_it_ran(self.ctx.root, stage, member(method, seed))
        prefect_ui.run_logger().info("%s: finished on worker %s in %.1f s%s (%s): %s", name, out["worker"],
                                     time.perf_counter() - sent["t0"], f", {how}" if how else "",
                                     ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), summary(out["record"]))
        return {"record": out["record"], "seconds": time.perf_counter() - sent["t0"], "unchanged": False,
                "worker": out["worker"], "timings": timings}

    def _say(self, name: str, event: dict[str, Any]) -> None:
        if self.ctx.log is not None:
            self.ctx.log({"stage": name, **event})


_logs: dict[str, Any] = {}  # parent run -> the driver's console log (not picklable: kept out of the subflow)


def on_dask(ctx: StageContext, record: bool) -> dict[str, dict[str, Any]]:
    """Run `stages_on_dask` with this run's DaskTaskRunner; label -> `{"record", "seconds", "unchanged", ...}`."""
    from .runner import build_runner, prefect_api_for_workers

    remote = require_remote(ctx.root, ctx.params)
    _logs[str(ctx.parent_run_id)] = ctx.log
    try:
        sub = stages_on_dask.with_options(task_runner=build_runner(ctx.params))
        with prefect_api_for_workers(ctx.params):
            return sub(str(ctx.root), ctx.params, str(ctx.parent_run_id), record, remote)
    finally:
        _logs.pop(str(ctx.parent_run_id), None)


def check_recorded_data(root: Path, record: bool) -> None:
    """Refuse, before any task is sent, a run whose data version dvc.lock does not record: workers pull the
    version dvc.lock names, and a `--set` run (not recorded) that changed the data or the split has none."""
    if record or _dvc.is_clean(root, "version_data"):
        return
    raise RuntimeError("this run's --set overrides change the data version or the split, which a --set run does "
                       "not record in dvc.lock, so Dask workers cannot pull it; put the change in params.yaml, "
                       "or run it with --set orchestration.task_runner=threads")


def _stages(root: str, params: Any, parent_run_id: str, record: bool, remote: str) -> dict[str, Any]:
    """The DAG with model stages on workers; version_data and register_and_promote run here, on the driver."""
    from prefect.context import FlowRunContext

    from .runner import check_resources

    check_resources(FlowRunContext.get().task_runner.client, dict(params.orchestration.resources))
    ctx = StageContext(Path(root), params, parent_run_id, _logs.get(parent_run_id))
    methods, more_seeds = params.unlearn.methods, params.evaluate.seeds[1:]
    out: dict[str, dict[str, Any]] = {"version_data": stage_task(ctx, "version_data", record=record)}
    check_recorded_data(ctx.root, record)
    driver = Driver(ctx, record, remote)
    if not record:  # a recorded version_data pushed it already (flows.stage_guard), to this same remote
        push_data(ctx.root, remote)
    chain = [("train_base", None, None), ("retrain_oracle", None, None)]
    for m in methods:  # timed stages: one at a time (flows.pipeline says why)
        chain += [("unlearn", m, None), *(("unlearn_seed", m, s) for s in more_seeds)]
    for stage, m, s in chain:
        out[label(stage, m, s)] = driver.finish(driver.submit(stage, m, s))
    sent = {m: driver.submit("evaluate", m) for m in methods}  # untimed: all at once
    for m, item in sent.items():
        out[label("evaluate", m)] = driver.finish(item)
    out["register_and_promote"] = stage_task(ctx, "register_and_promote", record=record)
    close_lost_attempts(parent_run_id)
    return out


# The subflow travels to the workers with every task (Prefect's run context): its parameters are picklable
# values, and its function is importable by name so that it is pickled by reference, not with its globals.
stages_on_dask = flow(name="pipeline_stages_on_dask", log_prints=False, validate_parameters=False)(_stages)
