"""Stage `calibrate`: tune each method's key settings on proxy requests, write the profile later runs use.

For this run's data version, model, training recipe and request kind (the split of the last `version_data`),
the library search (`unlearning.calibration.core.calibrate`) draws proxy requests inside the data the live
request keeps, clear of every pending, refused and done deletion request, searches each method's declared
space with Optuna and writes the profile `outputs/calibration/<key hash>.json`. The live forget set is never
searched on. Here: the inputs, and MLflow: a run `calibrate · <data>/<model> · <request kind>` with the
settings (params), the chosen values (params `<method>.<key>`), the gaps on the proxies and on the held-out
proxy (metrics) and the profile (artifact), and one child run per (method, trial).

Run by `unlearn calibrate` (the Prefect flow of `flows.calibrate_flow`) and by `python -m flows.stages
calibrate`, the command of the DVC stage `calibrate`, which is frozen: `dvc repro` never starts the search
by itself (it takes minutes per method); it records the profile folder, a dependency of unlearn@<method>.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .context import StageContext
from .profiles import keep_profile_dir, rooted
from .records import Record, StageRun
from .tracking import flatten, owner_tags, stage_run

EXCLUDED_STATUSES = ("pending", "refused", "done")  # a refused request is asked again; cancelled ones are not


class CalibrationRecord(Record):
    """What a calibration wrote (`outputs/runs/calibrate.json`: it names this run's MLflow run)."""

    profile: str  # path, relative to the project root
    key: str  # the profile's key hash (its file name)
    request_kind: dict[str, Any]
    values: dict[str, dict[str, Any]]  # method -> the values runs take from the profile (empty: defaults won)
    heldout: dict[str, dict[str, float | None]]  # method -> gap and default_gap on the held-out proxy
    skipped: dict[str, str]  # method -> why it was not calibrated
    excluded_requests: list[str]
    run_id: str | None = None
    budget_hints: list[str] = []  # searches the wall-time budget cut short (`unlearning.calibration.search.budget_hint`)


def kind_text(kind: dict[str, Any]) -> str:
    """`{"scenario": "class", "classes": 1}` -> `class (classes 1)`."""
    rest = ", ".join(f"{k} {v}" for k, v in kind.items() if k != "scenario")
    return kind["scenario"] + (f" ({rest})" if rest else "")


def excluded_requests(root: Path, params: Any, dataset: Any) -> tuple[list[str], list[list[int]]]:
    """Hashes and sample ids of the dataset's pending, refused and done deletion requests (read now)."""
    from .deletions import resolve_ids
    from .ledger import Ledger

    ledger = Ledger.existing(root, params)
    entries = ledger.entries(dataset.name) if ledger is not None else []
    chosen = [r for r in entries if r["status"] in EXCLUDED_STATUSES]
    return [r["hash"] for r in chosen], [resolve_ids(r, dataset) for r in chosen]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


def log_trials(parent_id: str, exp_id: str, method: str, log: list[dict[str, Any]], model: str,
               where: dict[str, str] | None = None) -> int:
    """One child run per trial: params = its setting, metrics = gap (objective), time_s and the running mean
    gap per proxy (`gap/running`, step = proxy); tag `state` complete / pruned / fail, and `where` (the Dask
    worker and device that ran the search). Returns how many."""
    import mlflow
    from mlflow.entities import Metric, Param

    client, now = mlflow.MlflowClient(), int(time.time() * 1000)
    for trial in log:
        run = client.create_run(exp_id, run_name=f"calibrate[{method}] trial {trial['number']}", tags={
            "mlflow.parentRunId": parent_id, "pipeline.stage": "calibrate", "method": method,
            "trial": str(trial["number"]), "state": trial["state"], **owner_tags(model), **(where or {})})
        metrics = [Metric(k, v, now, 0) for k, v in _finite({"gap": trial["value"], "time_s": trial["time_s"]}).items()]
        metrics += [Metric("gap/running", v, now, int(step))
                    for step, v in _finite({str(s): v for s, v in trial["intermediate"].items()}).items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("method", method)] + [
            Param(f"{method}.{k}", str(v)) for k, v in trial["params"].items()])
        client.set_terminated(run.info.run_id, "FAILED" if trial["state"] == "fail" else "FINISHED")
    return len(log)


def check_calibrate(root: Path, params: Any, methods: Sequence[str] | None) -> tuple[Any, Any]:
    """(Split, SplitRecord) of the current data version, once optuna and the methods are checked: bad input
    is one line, before any run or file exists."""
    from unlearning.calibration.core import plan_methods
    from unlearning.calibration.search import require_optuna

    from .version_data import load_split

    try:
        split, info = load_split(root)
    except FileNotFoundError:
        raise ValueError("no data version yet: run `unlearn run` (or `dvc repro version_data`) first; "
                         "calibration draws its proxy requests from that split") from None
    require_optuna()
    plan_methods(params, split, methods)
    return split, info


def calibrate(ctx: StageContext, methods: Sequence[str] | None = None) -> CalibrationRecord:
    """Calibrate `methods` (None: `calibration.methods`, else `unlearn.methods`, skipping the unsearchable)."""
    import mlflow

    from unlearning.calibration.core import calibrate as search
    from unlearning.calibration.profile import data_version, key_hash, profile_key
    from unlearning.calibration.universe import request_kind

    from .runner import is_dask
    from .settings import registered_model_name

    root = ctx.root
    params = rooted(ctx.params, root)
    split, info = check_calibrate(root, params, methods)
    hashes, excluded = excluded_requests(root, params, split.dataset)
    kind = request_kind(split)
    data = data_version(split)  # the data version runs look profiles up with (`use_profile`)
    keep_profile_dir(root)
    name = f"calibrate · {params.data.name}/{params.model.name} · {kind_text(kind)}"
    tags = {**info.lineage(), "request_kind": kind_text(kind), "excluded_requests": ",".join(hashes) or "none",
            "data_touched": "retain (proxy requests)"}
    with stage_run(root, params, "calibrate", run_name=name, parent_run_id=ctx.parent_run_id, tags=tags) as run:
        mlflow.log_params({**flatten(params.calibration.model_dump(exclude={"profile_dir"}), "calibration."),
                           "data_version": data})
        remote = None
        if is_dask(params):  # each method's search on a worker (flows.calibrate_remote)
            from .calibrate_remote import dask_methods

            remote = dask_methods(ctx, run.run_id, excluded, data)
        result = search(params, split, data_version=data, methods=methods, excluded=excluded, log=ctx.log,
                        run_methods=remote)
        model, out = registered_model_name(params), {}
        for m, s in result.searches.items():
            log_trials(run.run_id, run.experiment_id, m, s.log, model, remote.ran_on.get(m) if remote else None)
            mlflow.log_params({f"{m}.{k}": v for k, v in s.values.items()})
            out.update({f"{m}/{k}": v for k, v in {
                "gap": s.gap, "default_gap": s.default_gap, "time_s": s.time_s, "default_time_s": s.default_time_s,
                "heldout_gap": result.heldout[m]["gap"], "heldout_default_gap": result.heldout[m]["default_gap"],
                "trials": s.trials, "pruned": s.pruned, "failed": s.failed, "wall_s": s.wall_s}.items()})
        mlflow.log_metrics(_finite(out))
        key = key_hash(profile_key(params, split, data))
        mlflow.set_tags({**{f"{m}.chosen": s.chosen for m, s in result.searches.items()}, "profile_key": key,
                         "profile": _shown(result.path, root),
                         "skipped": "; ".join(f"{m}: {why}" for m, why in result.skipped.items()) or "none"})
        mlflow.log_artifact(str(result.path), "calibration")
    record = CalibrationRecord(
        profile=_shown(result.path, root), key=key, request_kind=kind, values=result.values(),
        heldout={m: {k: (v if math.isfinite(v) else None) for k, v in h.items()} for m, h in result.heldout.items()},
        skipped=result.skipped, excluded_requests=hashes, run_id=run.run_id,
        budget_hints=[s.budget_hint for s in result.searches.values() if s.budget_hint])
    record.write(StageRun.path(root, "calibrate"))
    return record
