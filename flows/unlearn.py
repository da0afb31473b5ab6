"""Stage `unlearn[method]`: run one method on the base model, log and register the result.

The new version is tagged with its lineage (data version, request, base version, method, the data the
method touched) and gets the alias `candidate-<method>` (an MLflow alias names one version, so each
method keeps its own candidate). A method that cannot serve the request is recorded as skipped, with why.
The first unlearning seed (`evaluate.seed`) makes the registered version; each other one
(`evaluate.more_seeds`) is a stage of its own (flows.unlearn_seed).

Content-addressed like the base model: the key is hash(base checkpoint, data version, request, method,
the method's effective config, seed). That config is the params with a matching calibration profile filled
in under them (`flows.profiles`), so a new profile makes a new key; the run is tagged with each setting's
source (`settings_source.<setting>`) and the profile used. When the registry holds a version under that key whose checkpoint
verifies, it is fetched and the method does not run: no new version, and `candidate-<method>` moves only
if it points elsewhere. The record (a DVC out) is then byte-identical to the one the first run wrote;
what this run did (its MLflow run, reused or not) goes to `outputs/runs/unlearn-<method>.json`.
"""

from __future__ import annotations

from typing import Any

from . import _registry as registry
from .context import StageContext
from .faults import crash_point
from .profiles import method_settings, source_tags
from .records import ModelRecord, SplitRecord, StageRun, UnlearnRecord
from .settings import CHECKPOINT, MODEL_FILE, RECORD_FILE, registered_model_name, stage_dir, tracking_uri
from .tracking import git_commit, method_params, setup_mlflow, stage_run
from .unlearn_seed import keep_seed_dir


def unlearn_key(base_sha256: str, info: SplitRecord, method: str, cfg: Any, seed: int) -> str:
    """hash(base checkpoint, data version, request, method, its effective config, seed) of an unlearned model.

    The base enters by the SHA-256 of its checkpoint: the bytes the method starts from, whichever version
    (trained, reused, production) holds them. Device stays out, as in the base model's key.
    """
    from unlearning.utils import content_hash

    return content_hash({"role": "unlearned", "base": base_sha256, "data": info.data_hash,
                         "request": info.request_hash, "requests": info.requests, "method": method,
                         "config": cfg.model_dump(mode="json"), "seed": seed}, 16)


def _touched(tag: str | None) -> list[str]:
    return [] if not tag or tag == "none" else tag.split(",")


def unlearn(ctx: StageContext, method: str) -> UnlearnRecord:
    """Unlearn the request from the base model with `method` (or reuse the version made so before)."""
    record = _registered(ctx, method)
    keep_seed_dir(ctx.root, method)
    return record


def _registered(ctx: StageContext, method: str) -> UnlearnRecord:
    """The registered version of the first unlearning seed: made now, or reused by content key."""
    import mlflow

    from unlearning.methods import METHODS, unsupported_reason
    from unlearning.models import save_checkpoint
    from unlearning.steps import run_method
    from unlearning.utils import get_device

    from .version_data import load_split

    root = ctx.root
    info_m = METHODS.get(method)
    split, info = load_split(root)
    settings = method_settings(ctx.params, root, split)  # a matching calibration profile under the params
    params = settings.params  # what runs, is logged and is keyed
    base = ModelRecord.read(stage_dir(root, "base") / MODEL_FILE)
    outdir = stage_dir(root, "unlearn", method)
    outdir.mkdir(parents=True, exist_ok=True)
    runs_file = StageRun.path(root, "unlearn", method)
    uri = tracking_uri(root, params)
    # A version honours what its base honours (the production model of a deletion run, or a base trained
    # without the done requests' samples) plus the requests it unlearns now (flows.production).
    honours = ",".join(sorted({h for h in base.honours.split(",") if h} | set(info.requests)))
    lin = {**info.lineage(), "honours": honours}
    lineage = {**lin, "method": method}
    reason = unsupported_reason(method, split)
    if reason:  # e.g. a class-only method in a run that processes deletion requests (sample ids)
        (outdir / CHECKPOINT).unlink(missing_ok=True)
        with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}] (skipped)",
                       parent_run_id=ctx.parent_run_id,
                       tags={**lineage, "data_touched": "none", "skipped": "true"}) as run:
            mlflow.set_tag("mlflow.note.content", f"Skipped: {reason}")
        record = UnlearnRecord(method=method, skipped=True, reason=reason, **info.lineage())
        record.write(outdir / RECORD_FILE)
        StageRun(stage="unlearn", run_id=run.run_id, source="skipped", tracking_uri=uri).write(runs_file)
        return record

    device = get_device(params.train.device)
    base_ckpt = stage_dir(root, "base") / CHECKPOINT
    base_sha = registry.verify_checkpoint(base_ckpt, base.checkpoint_sha256, f"outputs/base/{CHECKPOINT}",
                                          registry.LOCAL_HINT)
    seed = params.evaluate.seeds[0]
    cfg = params.unlearn.method_config(method)
    key = unlearn_key(base_sha, info, method, cfg, seed)
    name = registered_model_name(params)
    alias = f"candidate-{method}"
    lineage["base_version"] = base.version or ""
    needs = ",".join(sorted(info_m.needs)) or "none"
    ckpt = outdir / CHECKPOINT
    setup_mlflow(root, params)
    mv = registry.reuse_by_key(name, key, ckpt, registry.reporter(ctx.log, f"unlearn[{method}]"))
    if mv is not None:
        tags = dict(mv.tags)
        time_s = registry.run_metrics(mv.run_id).get("time/s", float("nan"))
        with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}] (reused)",
                       parent_run_id=ctx.parent_run_id,
                       tags={**lineage, "data_declared": needs, "data_touched": tags.get("data_touched", ""),
                             registry.KEY_TAG: key, registry.REUSED_TAG: "true", "reused_from": mv.run_id or "",
                             registry.CHECKSUM_TAG: tags.get(registry.CHECKSUM_TAG, ""),
                             "registered_model": name, "registered_version": str(mv.version),
                             "mlflow.note.content": f"Reused {name} v{mv.version} (same content key {key}); "
                                                    "the method did not run."},
                       reused=True) as run:  # no run of its own: listed on the parent (tracking.stage_run)
            run.log_metrics({"time/s": time_s})
        if registry.alias_version(name, alias) != str(mv.version):  # moved only when it points elsewhere
            registry.set_alias(name, alias, str(mv.version))
        record = UnlearnRecord(method=method, model_uri=mv.source, model_id=registry.model_id_of(mv),
                               registered_model=name, version=str(mv.version), key=key,
                               checkpoint_sha256=registry.verify_checkpoint(ckpt, tags.get(registry.CHECKSUM_TAG),
                                                                            f"{name} v{mv.version}"),
                               time_s=time_s, touched=_touched(tags.get("data_touched")),
                               base_version=tags.get("base_version") or None, **lin)
        record.write(outdir / RECORD_FILE)
        StageRun(stage="unlearn", run_id=run.run_id, source="reused", tracking_uri=uri,
                 reused_from=mv.run_id).write(runs_file)
        return record

    original = registry.load_verified(base_ckpt, base_sha, f"outputs/base/{CHECKPOINT}", device)
    with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}]", parent_run_id=ctx.parent_run_id,
                   tags={**lineage, "data_declared": needs, registry.KEY_TAG: key, registry.REUSED_TAG: "false",
                         **source_tags(settings, method, root)}) as run:
        mlflow.log_params({"seed": seed, **method_params(method, cfg, split, seed)})
        result = run_method(params, method, original, split, seed=seed, log=ctx.log)
        save_checkpoint(result.model, ckpt)
        sha = registry.sha256_file(ckpt)
        touched = ",".join(result.touched) or "none"
        model_id, model_uri = registry.log_model(ckpt, root, method)
        # Logged before registering: a run killed after it leaves a version that a rerun reuses, time included.
        mlflow.log_metrics({"time/s": result.time_s})
        mlflow.set_tag(registry.CHECKSUM_TAG, sha)
        version = registry.register(name, model_uri, {"role": "unlearned", "run_id": run.run_id,
                                                      "data_touched": touched, "git_commit": git_commit(root),
                                                      registry.KEY_TAG: key, registry.CHECKSUM_TAG: sha, **lineage})
        crash_point("unlearn:registered")
        registry.set_alias(name, alias, version)
        mlflow.set_tags({"data_touched": touched, "model_uri": model_uri, "model_id": model_id,
                         "registered_model": name, "registered_version": version})
    record = UnlearnRecord(method=method, model_uri=model_uri, model_id=model_id, registered_model=name,
                           version=version, key=key, checkpoint_sha256=sha, time_s=result.time_s,
                           touched=result.touched, base_version=base.version, **lin)
    record.write(outdir / RECORD_FILE)
    StageRun(stage="unlearn", run_id=run.run_id, source="unlearned", tracking_uri=uri).write(runs_file)
    return record
