"""The whole DAG as one Prefect 3 flow, `unlearning_pipeline` (what `unlearn run` and a schedule run).

    version_data ──► train_base ──► unlearn[method] (one per method) ──► evaluate[method] ──► register_and_promote
          └────────► retrain_oracle (retain data only, optional) ─────────────┘

Each task calls the stage function that `dvc repro` runs through `python -m flows.<stage>` (shape (a) of
DESIGN.md; why, with measurements, in `flows/_dvc.py`), then records the finished stage in dvc.lock with
`dvc commit`. `unlearn[m]` / `evaluate[m]` are skipped when `dvc status` reports them unchanged and their
MLflow run still exists (their run then says "unchanged"); base and oracle are reused by content key
(`flows/train.py`). Tasks exchange paths, run ids and model URIs, never tensors or modules; retries only
on I/O errors (files, sqlite locks, network). Without `PREFECT_API_URL` the flow runs on Prefect's
temporary local server (no server to start by hand). With `--set` overrides, the run is tracked in MLflow
but not recorded in dvc.lock (the lock must describe params.yaml; use `dvc exp run -S` for that).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from . import _common as C
from . import _dvc
from . import _registry as R


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


def _params(root: str, params_path: str, overrides: list[str]):
    return C.load(Path(root), params_path, overrides)


def _record(root: Path, overrides: list[str]) -> bool:
    return _dvc.enabled(root) and not overrides


def _commit(root: Path, record: bool, stages: list[str]) -> None:
    if record:
        _dvc.commit(root, stages)


@task(name="version_data", **IO_RETRY)
def version_data(root: str, params_path: str, overrides: list[str], parent_run_id: str) -> dict[str, Any]:
    """Materialise `data/` (minus deleted ids), `dvc add` it, write the split of this run."""
    from unlearning.data import load_dataset

    from . import deletions
    from .prepare import materialise, prepare

    t0 = time.perf_counter()
    path = Path(root)
    params = _params(root, params_path, overrides)
    dataset = load_dataset(params.data.name, params.data.root, params.data.download, **params.data.options())
    requests = deletions.load_all(path)
    pending, _, _ = deletions.validate_pending(path, dataset)
    manifest = {
        "pending": [{"hash": r["hash"], "kind": r["kind"], "classes": r.get("classes"),
                     "ids": deletions.resolve_ids(r, dataset)} for r in pending],
        "done": [{"hash": r["hash"], "kind": r["kind"], "classes": r.get("classes"),
                  "ids": deletions.resolve_ids(r, dataset)} for r in deletions.of_dataset(requests, dataset.name, "done")],
    }
    materialise(path, dataset, manifest)
    if _dvc.enabled(path):
        _dvc.add(path, C.DATA_DIR)
        _dvc.push_if_remote(path, C.DATA_DIR)
    out = prepare(path, params, parent_run_id)
    _commit(path, _record(path, overrides), ["version_data"])
    sm = out["summary"]
    C.Progress("version_data").say(f"data {out['data_hash'][:12]}, forget {sm['description']} ({out['source']}): "
                                   f"{sm['forget']} forget / {sm['retain']} retain, request {out['request_hash']}")
    return {**out, "seconds": time.perf_counter() - t0}


def _train_stage(stage: str, role: str, root: str, params_path: str, overrides: list[str],
                 parent_run_id: str) -> dict[str, Any]:
    """Body of train_base / retrain_oracle: train (or reuse) one model, record the DVC stage."""
    from .train import train_model

    t0 = time.perf_counter()
    params = _params(root, params_path, overrides)
    rec = train_model(Path(root), params, role, parent_run_id, log=C.Progress(stage))
    _commit(Path(root), _record(Path(root), overrides), [stage])
    _say_model(stage, rec)
    return {**rec, "seconds": time.perf_counter() - t0}


@task(name="train_base", **IO_RETRY)
def train_base(root: str, params_path: str, overrides: list[str], parent_run_id: str, data: dict) -> dict[str, Any]:
    """The original model: production (deletion runs), reused by content key, or trained."""
    return _train_stage("train_base", "base", root, params_path, overrides, parent_run_id)


@task(name="retrain_oracle", **IO_RETRY)
def retrain_oracle(root: str, params_path: str, overrides: list[str], parent_run_id: str, data: dict) -> dict[str, Any]:
    """Retrain from scratch on the retain data (skipped when evaluate.oracle is false)."""
    return _train_stage("retrain_oracle", "oracle", root, params_path, overrides, parent_run_id)


def _say_model(stage: str, rec: dict[str, Any]) -> None:
    if rec.get("skipped"):
        C.Progress(stage).say(f"skipped ({rec['reason']})")
    else:
        C.Progress(stage).say(f"{rec['source']}: {rec['registered_model']} v{rec['version']}"
                              + (f" (content key {rec['key']})" if rec["source"] == "reused" else ""))


def _unchanged(root: Path, record: bool, stage: str, run_file: Path, params) -> dict[str, Any] | None:
    """The previous record of a stage that DVC reports unchanged and whose MLflow run still exists."""
    if not record or not run_file.exists() or not _dvc.is_clean(root, stage):
        return None
    rec = C.read_json(run_file)
    if rec.get("tracking_uri") != C.tracking_uri(root, params):
        return None
    try:
        C.setup_mlflow(root, params)
        R.client().get_run(rec["run_id"])
    except Exception:  # noqa: BLE001 - any lookup failure means: run it again
        return None
    version = rec.get("version") or rec.get("model_version")
    if version and not R.version_exists(C.registered_model_name(params), version):
        return None
    return rec


def _note_unchanged(root: Path, params, stage: str, run_name: str, parent_run_id: str, rec: dict,
                    metrics: dict[str, float] | None = None) -> str:
    """A small MLflow run saying the stage was unchanged and pointing at the run that produced it."""
    import mlflow

    tags = {"unlearn.reused": "true", "reused_from": rec["run_id"], "method": rec.get("method", ""),
            "data_hash": rec.get("data_hash", ""), "request_hash": rec.get("request_hash", ""),
            "mlflow.note.content": f"dvc status: unchanged; outputs of run {rec['run_id']} reused."}
    with C.stage_run(root, params, stage, run_name=f"{run_name} (unchanged)", parent_run_id=parent_run_id,
                     tags=tags) as run:
        if metrics:
            mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float) and v == v})
    return run.run_id


@task(name="unlearn", task_run_name="unlearn[{method}]", **IO_RETRY)
def unlearn(root: str, params_path: str, overrides: list[str], parent_run_id: str, method: str,
            base: dict) -> dict[str, Any]:
    """One unlearning method on the base model."""
    from .unlearn import unlearn_method

    t0 = time.perf_counter()
    path, params = Path(root), _params(root, params_path, overrides)
    stage = f"unlearn@{method}"
    prev = _unchanged(path, _record(path, overrides), stage, C.stage_dir(path, "unlearn", method) / C.RUN_FILE,
                      params)
    if prev is not None:
        _note_unchanged(path, params, "unlearn", f"unlearn[{method}]", parent_run_id, prev,
                        {"time/s": prev["time_s"]} if "time_s" in prev else None)
        C.Progress(f"unlearn[{method}]").say("unchanged (dvc status): " + (
            "skipped" if prev.get("skipped") else f"keeps v{prev['version']}"))
        return {**prev, "unchanged": True, "seconds": time.perf_counter() - t0}
    rec = unlearn_method(path, params, method, parent_run_id, log=C.Progress(f"unlearn[{method}]"))
    _commit(path, _record(path, overrides), [stage])
    C.Progress(f"unlearn[{method}]").say(f"skipped: {rec['reason']}" if rec.get("skipped") else
                                         f"{rec['registered_model']} v{rec['version']} in {rec['time_s']:.2f} s, "
                                         f"touched {','.join(rec['touched']) or 'none'}")
    return {**rec, "seconds": time.perf_counter() - t0}


@task(name="evaluate", task_run_name="evaluate[{method}]", **IO_RETRY)
def evaluate(root: str, params_path: str, overrides: list[str], parent_run_id: str, method: str,
             model: dict, oracle: dict) -> dict[str, Any]:
    """All metrics and plots of one unlearned model."""
    from .evaluate import evaluate_method

    t0 = time.perf_counter()
    path, params = Path(root), _params(root, params_path, overrides)
    stage = f"evaluate@{method}"
    prev = _unchanged(path, _record(path, overrides), stage, C.stage_dir(path, "evaluate", method) / C.RUN_FILE,
                      params)
    if prev is not None and C.metrics_file(path, method).exists():
        metrics = C.read_json(C.metrics_file(path, method))
        _note_unchanged(path, params, "evaluate", f"evaluate[{method}]", parent_run_id, prev, metrics)
        return {**prev, "unchanged": True, "seconds": time.perf_counter() - t0}
    C.Progress(f"evaluate[{method}]").say("scoring (accuracies, MIAs, ZRF, oracle distances, AIN) ...")
    rec = evaluate_method(path, params, method, parent_run_id)
    m = rec.pop("metrics", {})
    C.Progress(f"evaluate[{method}]").say("skipped (method skipped)" if rec.get("skipped") else ", ".join(
        f"{k} {m[k]:.3f}" for k in ("forget/acc", "retain/acc", "test/acc") if k in m))
    _commit(path, _record(path, overrides), [stage])
    return {**rec, "seconds": time.perf_counter() - t0}


@task(name="register_and_promote", **IO_RETRY)
def register_and_promote(root: str, params_path: str, overrides: list[str], parent_run_id: str,
                         evaluated: list[dict]) -> dict[str, Any]:
    """Gates, aliases (candidate/staging/production/previous), deletion requests marked."""
    from .promote import register_and_promote as promote_fn

    t0 = time.perf_counter()
    path, params = Path(root), _params(root, params_path, overrides)
    out = promote_fn(path, params, parent_run_id)
    _commit(path, _record(path, overrides), ["register_and_promote"])
    return {**out, "seconds": time.perf_counter() - t0}


def _raise_first_failure(futures: list) -> None:
    """Wait for every task; re-raise the first real failure (not the 'upstream failed' of its dependants)."""
    for f in futures:
        f.wait()
    for f in futures:
        if f.state.is_failed() or f.state.is_crashed():
            f.result()  # raises the task's own exception


def _start_parent(root: Path, params, overrides: list[str]) -> str:
    import datetime as dt

    import mlflow

    from . import deletions

    exp_id = C.setup_mlflow(root, params)
    try:
        pending = deletions.of_dataset(deletions.load_all(root), params.data.name, "pending")
    except deletions.RequestError:  # naming only; version_data reports bad requests properly
        pending = []
    what = (f"{len(pending)} deletion request(s)" if pending else f"forget {params.request.kind}="
            f"{getattr(params.request, params.request.kind)}")
    name = f"pipeline · {params.data.name}/{params.model.name} · {what} · {dt.datetime.now():%Y-%m-%d %H:%M}"
    run = mlflow.MlflowClient().create_run(exp_id, run_name=name, tags={
        "pipeline.stage": "pipeline", "launcher": "prefect", "git_commit": C.git_commit(root),
        "device": C.device_name(params), "overrides": " ".join(overrides), "methods": ",".join(params.unlearn.methods),
        "requests": ",".join(r["hash"] for r in pending)})
    from mlflow.entities import Param

    mlflow.MlflowClient().log_batch(run.info.run_id, params=[
        Param(k, v[:6000]) for k, v in C.flatten(params.model_dump()).items()])
    return run.info.run_id


# Task runner: Prefect's default ThreadPoolTaskRunner. The timed stages (base, oracle, each unlearn[m])
# are chained with wait_for so they never share the machine: the oracle's time is the speedup's
# denominator and each method's wall time is a reported metric. Overlapping them saved only ~4 s of a
# 37 s flow body (4 methods, 2 cores) but made the timings meaningless (finetune showed 1.5x instead of
# ~18x). The untimed evaluate[m] tasks run concurrently after the last unlearn. To spread methods over
# machines (one method per worker), swap in a Dask or Ray task runner (prefect-dask / prefect-ray):
# tasks already exchange only paths, ids and URIs.
@flow(name="unlearning_pipeline", log_prints=False)
def unlearning_pipeline(root: str = ".", params_path: str = "params.yaml",
                        overrides: list[str] | None = None) -> dict[str, Any]:
    """Process pending deletion requests (or the params' request): version, train, unlearn, evaluate, promote.

    Args:
        root: the project folder (params.yaml, data/, dvc.yaml, requests/).
        params_path: params file, relative to `root`.
        overrides: `section.key=value` overrides (values parsed as YAML).

    Returns:
        `{"parent_run_id", "production", "message", "table", "stages": {name: seconds}}`.
    """
    import mlflow

    C.quiet_env()
    os.environ["UNLEARN_LAUNCHER"] = "prefect"
    overrides = list(overrides or [])
    root = str(Path(root).resolve())
    params = _params(root, params_path, overrides)
    t0 = time.perf_counter()
    parent = _start_parent(Path(root), params, overrides)
    status = "FAILED"
    try:
        args = (root, params_path, overrides, parent)
        data = version_data.submit(*args)
        base = train_base.submit(*args, data)
        oracle = retrain_oracle.submit(*args, data, wait_for=[base])
        models, previous = {}, oracle
        for m in params.unlearn.methods:
            models[m] = previous = unlearn.submit(*args, m, base, wait_for=[previous])
        evals = [evaluate.submit(*args, m, models[m], oracle, wait_for=[previous]) for m in params.unlearn.methods]
        promote = register_and_promote.submit(*args, evals)
        _raise_first_failure([data, base, oracle, *models.values(), *evals, promote])
        result = promote.result()
        d = data.result()
        for key in ("data_hash", "request_hash"):
            mlflow.MlflowClient().set_tag(parent, key, d[key])
        stages = {"version_data": data.result()["seconds"], "train_base": base.result()["seconds"],
                  "retrain_oracle": oracle.result().get("seconds", 0.0)}
        stages.update({f"unlearn[{m}]": f.result()["seconds"] for m, f in models.items()})
        stages.update({f"evaluate[{m}]": f.result()["seconds"] for m, f in zip(params.unlearn.methods, evals, strict=True)})
        stages["register_and_promote"] = result["seconds"]
        status = "FINISHED"
        return {"parent_run_id": parent, "production": result["production"], "message": result["message"],
                "table": result["table"], "stages": stages, "base": base.result(), "oracle": oracle.result(),
                "seconds": time.perf_counter() - t0, "refused": result["refused"]}
    finally:
        c = mlflow.MlflowClient()
        c.log_metric(parent, "pipeline/seconds", time.perf_counter() - t0)
        c.set_terminated(parent, status)
