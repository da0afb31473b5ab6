"""Stage `unlearn[method]`: run one method on the base model, log and register the result.

The new version is tagged with its lineage (data version, request, base version, method, the data the
method touched) and gets the alias `candidate-<method>` (an MLflow alias names one version, so each
method keeps its own candidate). A method that cannot serve the request is recorded as skipped, with why.
The pipeline unlearns with the first of `evaluate.seeds` (fanning out over seeds is the runner's job).
"""

from __future__ import annotations

from . import _registry as registry
from .context import StageContext
from .records import ModelRecord, UnlearnRecord
from .settings import CHECKPOINT, MODEL_FILE, RECORD_FILE, registered_model_name, stage_dir, tracking_uri
from .tracking import flatten, git_commit, stage_run


def unlearn(ctx: StageContext, method: str) -> UnlearnRecord:
    """Unlearn the request from the base model with `method`; writes outputs/unlearn/<method>/."""
    import mlflow

    from unlearning.methods import METHODS, unsupported_reason
    from unlearning.models import load_checkpoint, save_checkpoint
    from unlearning.steps import run_method
    from unlearning.utils import get_device

    from .version_data import load_split

    root, params = ctx.root, ctx.params
    info_m = METHODS.get(method)
    split, info = load_split(root)
    base = ModelRecord.read(stage_dir(root, "base") / MODEL_FILE)
    outdir = stage_dir(root, "unlearn", method)
    outdir.mkdir(parents=True, exist_ok=True)
    lineage = {**info.lineage(), "method": method}
    reason = unsupported_reason(method, split)
    if reason:  # e.g. a class-only method in a run that processes deletion requests (sample ids)
        (outdir / CHECKPOINT).unlink(missing_ok=True)
        with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}] (skipped)",
                       parent_run_id=ctx.parent_run_id,
                       tags={**lineage, "data_touched": "none", "skipped": "true"}) as run:
            mlflow.set_tag("mlflow.note.content", f"Skipped: {reason}")
        record = UnlearnRecord(method=method, run_id=run.run_id, tracking_uri=tracking_uri(root, params),
                               skipped=True, reason=reason, **info.lineage())
        record.write(outdir / RECORD_FILE)
        return record

    device = get_device(params.train.device)
    original = load_checkpoint(stage_dir(root, "base") / CHECKPOINT, device)
    seed = params.evaluate.seeds[0]
    cfg = params.unlearn.method_config(method)
    name = registered_model_name(params)
    lineage["base_version"] = base.version or ""
    needs = ",".join(sorted(info_m.needs)) or "none"
    with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}]", parent_run_id=ctx.parent_run_id,
                   tags={**lineage, "data_declared": needs}) as run:
        mlflow.log_params({"method": method, "seed": seed, **flatten(cfg.model_dump(), f"{method}.")})
        result = run_method(params, method, original, split, seed=seed, log=ctx.log)
        ckpt = save_checkpoint(result.model, outdir / CHECKPOINT)
        touched = ",".join(result.touched) or "none"
        model_id, model_uri = registry.log_model(ckpt)
        mlflow.log_metrics({"time/s": result.time_s})
        version = registry.register(name, model_uri, {"role": "unlearned", "run_id": run.run_id,
                                                      "data_touched": touched, "git_commit": git_commit(root),
                                                      **lineage})
        registry.set_alias(name, f"candidate-{method}", version)
        mlflow.set_tags({"data_touched": touched, "model_uri": model_uri, "model_id": model_id,
                         "registered_model": name, "registered_version": version})
    record = UnlearnRecord(method=method, run_id=run.run_id, tracking_uri=tracking_uri(root, params),
                           model_uri=model_uri, model_id=model_id, registered_model=name, version=version,
                           time_s=result.time_s, touched=result.touched, base_version=base.version,
                           **info.lineage())
    record.write(outdir / RECORD_FILE)
    return record
