"""Stages `train_base` and `retrain_oracle`: the original model and the retain-only oracle.

Both are content-addressed: the key is hash(data version, forget request, model, training params, seed).
When MLflow already holds a finished run that trained a model under that key, its checkpoint is fetched
instead of training again, and this run says so (run name "... (reused)", tags `unlearn.reused=true`,
`reused_from=<run id>`). For a run that processes deletion requests, the base is the model in
`production` (unlearning starts from what is deployed); without one, the base model is trained.

`python -m flows.stages train_base|retrain_oracle` is the DVC stage command.
"""

from __future__ import annotations

import math
from typing import Any

from . import _registry as registry
from .context import StageContext
from .records import ModelRecord, SplitRecord, StageRun, write_json
from .settings import (
    CHECKPOINT,
    MODEL_FILE,
    RUNS_DIR,
    metrics_file,
    registered_model_name,
    stage_dir,
    tracking_uri,
)
from .tracking import flatten, git_commit, setup_mlflow, stage_run


def content_key(params: Any, split: SplitRecord, role: str) -> str:
    """hash(data version, request, model, training params, seed) of a base or oracle model."""
    from unlearning.utils import content_hash

    # Device and compile change how, not what, is trained: they stay out of the key.
    train = params.train.model_dump(exclude={"device", "compile"})
    return content_hash({"role": role, "data": split.data_hash, "request": split.request_hash,
                         "model": params.model.model_dump(), "train": train, "seed": params.train.seed,
                         "data_name": params.data.model_dump()}, 16)


def train_base(ctx: StageContext) -> ModelRecord:
    """Stage `train_base`: the original model (production in deletion runs, reused by key, or trained)."""
    return _train_model(ctx, "base")


def retrain_oracle(ctx: StageContext) -> ModelRecord:
    """Stage `retrain_oracle`: retrain from scratch on the retain data (skipped when evaluate.oracle is false)."""
    return _train_model(ctx, "oracle")


def _write(ctx: StageContext, record: ModelRecord, run: StageRun, metrics: dict[str, float]) -> ModelRecord:
    record.write(stage_dir(ctx.root, record.role) / MODEL_FILE)
    run.write(ctx.root / RUNS_DIR / f"{record.role}.json")
    write_json(metrics_file(ctx.root, record.role), metrics)
    return record


def _train_model(ctx: StageContext, role: str) -> ModelRecord:
    """Train (or reuse) the `base` or `oracle` model; writes outputs/<role>/{model.pt,model.json}."""
    import mlflow

    from unlearning.models import load_checkpoint, save_checkpoint
    from unlearning.steps import evaluate_model, train_oracle, train_original
    from unlearning.utils import get_device

    from .version_data import load_split

    root, params = ctx.root, ctx.params
    stage = "train_base" if role == "base" else "retrain_oracle"
    outdir = stage_dir(root, role)
    outdir.mkdir(parents=True, exist_ok=True)
    if role == "oracle" and not params.evaluate.oracle:
        (outdir / CHECKPOINT).unlink(missing_ok=True)
        return _write(ctx, ModelRecord(role=role, skipped=True, reason="evaluate.oracle is false"),
                      StageRun(stage=stage, source="skipped"), {})

    split, info = load_split(root)
    lineage = info.lineage(forgets=role == "oracle")  # the base model saw this run's forget set
    name = registered_model_name(params)
    exp_id = setup_mlflow(root, params)
    key = content_key(params, info, role)
    ckpt = outdir / CHECKPOINT
    device = get_device(params.train.device)

    source, prior, production = "trained", None, None
    if role == "base" and info.source == "deletion requests":
        production = registry.alias_version(name, "production")
        if production:
            source = f"production v{production}"
    if production is None:
        prior = registry.find_by_key(exp_id, key)
        if prior is not None:
            source = "reused"
    run_name = stage + ("" if source == "trained" else f" ({source})")
    tags = {**lineage, registry.KEY_TAG: key, registry.REUSED_TAG: str(source != "trained").lower(),
            "role": role, "data_touched": "retain" if role == "oracle" else "forget,retain"}
    with stage_run(root, params, stage, run_name=run_name, parent_run_id=ctx.parent_run_id, tags=tags) as run:
        mlflow.log_params(flatten({"data": params.data.model_dump(), "model": params.model.model_dump(),
                                   "train": params.train.model_dump()}))
        metrics = None
        if production is not None:
            mv = registry.client().get_model_version(name, production)
            model_uri, version = f"models:/{name}/{production}", production
            registry.fetch_checkpoint(model_uri, ckpt)
            time_s = float("nan")
            model_id = getattr(mv, "model_id", None) or ""
            mlflow.set_tags({"reused_from": mv.run_id or "", "mlflow.note.content":
                             f"Deletion run: unlearning starts from production v{production}; nothing trained."})
        elif prior is not None:
            model_uri, model_id = prior.data.tags["model_uri"], prior.data.tags.get("model_id", "")
            version = prior.data.tags.get("registered_version", "")
            registry.fetch_checkpoint(model_uri, ckpt)
            time_s = float(prior.data.metrics.get("time/s", float("nan")))
            metrics = dict(prior.data.metrics)
            mlflow.set_tags({"reused_from": prior.info.run_id, "mlflow.note.content":
                             f"Reused the model of run {prior.info.run_id} (same content key {key}); "
                             "nothing trained."})
        else:
            train_fn = train_original if role == "base" else train_oracle
            model, time_s = train_fn(params, split, log=ctx.log)
            save_checkpoint(model, ckpt)
            model_id, model_uri = registry.log_model(ckpt)
            version = registry.register(name, model_uri, {"role": role, "run_id": run.run_id, registry.KEY_TAG: key,
                                                          **lineage, "git_commit": git_commit(root)})
        mlflow.set_tags({"model_uri": model_uri, "model_id": model_id, "registered_model": name,
                         "registered_version": version})
        if metrics is None:
            model = load_checkpoint(ckpt, device)
            metrics = evaluate_model(params, model, split, seed=params.evaluate.seeds[0])
            metrics["time/s"] = time_s
        # Finite values only, as MLflow keeps them: a reused model then writes the same metrics file.
        metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        mlflow.log_metrics(metrics)
    record = ModelRecord(role=role, model_uri=model_uri, model_id=model_id, registered_model=name, version=version,
                         key=key, time_s=time_s if math.isfinite(time_s) else None,
                         from_production=production is not None, **lineage)
    return _write(ctx, record, StageRun(stage=stage, run_id=run.run_id, source=source,
                                        tracking_uri=tracking_uri(root, params)), metrics)
