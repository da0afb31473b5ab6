"""The stage task of the driver, and what stage tasks share on the driver or a worker: retries on I/O
errors only, and keeping a per-method stage that `dvc status` reports unchanged (its record still matching
the registry) instead of running it again.

The model stages run one at a time, so that each one's wall time is measured alone (flows.pipeline), and a
`dvc commit` after each one sat on that chain: 0.6-1.6 s per stage at load 3, twelve stages. A chained stage
is recorded instead by `record_deferred`, once the chain has ended, in one batched commit that runs beside
the evaluate stages (and, when the chain fails part-way, for what finished). A run killed before that
leaves those stages unrecorded: the next run does them again, reusing their registered models by key.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect import task

from . import _dvc, prefect_ui
from . import _registry as registry
from .context import StageContext
from .faults import crash_point
from .profiles import record_profiles
from .records import EvalRecord, Record, SeedRecord, StageRun, UnlearnRecord
from .retry import IO_RETRY
from .settings import RECORD_FILE, registered_model_name, stage_dir, tracking_uri
from .stages import address, label, member, run_stage, summary
from .tracking import note_reused, setup_mlflow
from .unlearn_seed import seed_dir

# Stages skipped when `dvc status` is clean.
PRIOR = {"unlearn": UnlearnRecord, "unlearn_seed": SeedRecord, "evaluate": EvalRecord}
# Parent run id -> dvc.yaml addresses of finished stages whose dvc.lock record waits for `record_deferred`.
_deferred: dict[str, list[str]] = {}
_deferred_lock = threading.Lock()


def record_deferred(ctx: StageContext) -> list[str]:
    """Record the finished stages this run deferred (`stage_task(defer=True)`) in one `dvc commit`."""
    with _deferred_lock:
        stages = list(dict.fromkeys(_deferred.get(ctx.parent_run_id, [])))
    if stages:
        _dvc.commit(ctx.root, stages)
    with _deferred_lock:  # only once recorded: a failed commit leaves them for the next call
        left = [s for s in _deferred.pop(ctx.parent_run_id, []) if s not in stages]
        if left:
            _deferred[ctx.parent_run_id] = left
    return stages


@task(name="record", task_run_name="record chained stages", **IO_RETRY)
def record_task(ctx: StageContext, upstream: list[Any] | None = None) -> dict[str, Any]:
    """`record_deferred` as a task after the chain (`upstream` only orders it)."""
    t0 = time.perf_counter()
    stages = record_deferred(ctx)
    return {"record": stages, "seconds": time.perf_counter() - t0, "unchanged": not stages}


def unchanged(ctx: StageContext, stage: str, method: str, record: bool, seed: int | None = None) -> Record | None:
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
               upstream: list[Any] | None = None, seed: int | None = None, defer: bool = False) -> dict[str, Any]:
    """Run one stage (or keep its unchanged outputs), record it in dvc.lock; `upstream` only orders tasks.

    `defer`: leave the record to `record_deferred` (a stage of the timed chain)."""
    t0 = time.perf_counter()
    name = label(stage, method, seed)
    run_log = prefect_ui.run_logger()
    run_log.info("%s: started", name)
    prev = unchanged(ctx, stage, method, record, seed) if stage in PRIOR and method else None
    if prev is not None:
        if ctx.log is not None:
            ctx.log({"stage": name, "unchanged": "dvc status clean, outputs kept"})
        run_log.info("%s: reused, dvc status unchanged: outputs kept (%.1f s)", name, time.perf_counter() - t0)
        return {"record": prev, "seconds": time.perf_counter() - t0, "unchanged": True}

    def log(event: dict[str, Any]) -> None:
        if ctx.log is not None:
            ctx.log({**event, "label": name})

    out = run_stage(StageContext(ctx.root, ctx.params, ctx.parent_run_id, log), stage, method, seed)
    if record and defer:
        with _deferred_lock:
            _deferred.setdefault(ctx.parent_run_id, []).append(address(stage, method, seed))
    elif record:
        _dvc.commit(ctx.root, [address(stage, method, seed)])
        if stage == "version_data":
            _dvc.push_if_remote(ctx.root, "data", ctx.params.orchestration.dvc_remote)
            record_profiles(ctx.root)  # the calibration profiles, a dependency of unlearn@<m> (flows.profiles)
    crash_point(f"after:{name}")
    if ctx.log is not None:
        ctx.log({"stage": name, "done": summary(out)})
    how = prefect_ui.how_it_ran(ctx.root, stage, member(method, seed))
    run_log.info("%s: finished in %.1f s%s: %s", name, time.perf_counter() - t0, f", {how}" if how else "",
                 summary(out))
    return {"record": out, "seconds": time.perf_counter() - t0, "unchanged": False}
