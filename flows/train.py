"""Stages `train_base` and `retrain_oracle`: the original model and the retain-only oracle.

Both are content-addressed: the key is hash(data version, forget request, model, training params, seed).
When the registry already holds a version under that key (a version tag, so a version registered by a
run killed afterwards counts too) whose checkpoint verifies, it is fetched instead of training again,
and it makes no MLflow run: the pipeline's parent run lists it (tag `reused_stages`, "train_base (reused)
from run <id>"; `flows.tracking.stage_run`) and outputs/runs/<role>.json says `reused`. A
version whose stored checkpoint fails its SHA-256 is reported in one line and the model is trained again.
For a run that processes deletion requests, the base is the model in `production` (unlearning starts
from what is deployed; a corrupt one refuses the run with the way out); without one, it is trained.

`python -m flows.stages train_base|retrain_oracle` is the DVC stage command.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from . import _registry as registry
from .context import StageContext
from .records import ModelRecord, SplitRecord, StageRun, read_json, write_json
from .settings import (
    CHECKPOINT,
    MEMBERSHIP_FILE,
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
    """Stage `retrain_oracle`: retrain from scratch on the retain data (skipped when evaluate.oracle is false).

    The oracle at `train.seed` is the one every method is measured against (distances, AIN). With several
    `evaluate.training_seeds`, one more oracle per other seed (as many as there are training seeds in all)
    makes the retrain band the gates are decided on (`unlearning.verdicts`): each is registered like the
    oracle (reused by content key), and the metrics of all of them go to outputs/metrics/oracle_band.json
    as `{"runs": [...]}`.
    """
    record = _train_model(ctx, "oracle")
    band: list[dict[str, Any]] = []
    if not record.skipped:
        band.append({"training_seed": ctx.params.train.seed, **read_json(metrics_file(ctx.root, "oracle"))})
        for seed in band_seeds(ctx.params):
            band.append({"training_seed": seed, **_train_model(ctx, "oracle", band_seed=seed)})
        _log_band(ctx, band)
    write_json(metrics_file(ctx.root, "oracle_band"), {"runs": band})
    _write_membership(ctx, [] if record.skipped else band_seeds(ctx.params))
    return record


def _write_membership(ctx: StageContext, seeds: list[int]) -> None:
    """outputs/oracle/membership.npz: the band's per-sample log-odds that each method's paired membership
    shift is measured against (`unlearning.metrics.membership`); none with fewer than two retrains."""
    import os

    from unlearning.metrics.membership import MembershipReference, band_reference
    from unlearning.models import load_checkpoint

    from .version_data import load_split

    folder = stage_dir(ctx.root, "oracle")
    path = folder / MEMBERSHIP_FILE
    ckpts = [folder / CHECKPOINT, *(folder / f"band-{s}" / CHECKPOINT for s in seeds)]
    split, _ = load_split(ctx.root)
    reference = band_reference([load_checkpoint(c) for c in ckpts], split) if len(ckpts) >= 2 else None
    if reference is None:
        path.unlink(missing_ok=True)
        return
    if path.exists() and MembershipReference.load(path) == reference:
        return  # an npz stamps the time into its zip entries: rewriting equal arrays would change the DVC out
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        reference.save(f)
    os.replace(tmp, path)


def band_seeds(params: Any) -> list[int]:
    """The training seeds of the extra oracles: the others than train.seed, so the band has one per seed."""
    seeds = params.evaluate.training_seeds
    return [s for s in seeds if s != params.train.seed][: len(seeds) - 1]


def _log_band(ctx: StageContext, band: list[dict[str, Any]]) -> None:
    """The band's means and 95 % intervals on the oracle's run (`band/<metric>`, `.../ci_low`, `.../ci_high`);
    and, as soon as the retrains are measured, which gate limits are finer than their spread."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from unlearning.stats import ci_metrics, rate_sizes, summarize
    from unlearning.verdicts import noise_notes

    from .version_data import load_split

    split, _ = load_split(ctx.root)
    sizes = rate_sizes(split)
    summary = summarize(band, sizes)
    means = {f"band/{k}": float(v) for k, v in summary.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and k != "n_seeds" and math.isfinite(v)}
    run = StageRun.read(ctx.root / RUNS_DIR / "oracle.json").run_id
    if run:
        now = int(time.time() * 1000)
        values = {**means, **ci_metrics(summary, "band/"), "band/n_seeds": float(len(band))}
        MlflowClient().log_batch(run, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
    base_path = metrics_file(ctx.root, "base")
    base = read_json(base_path) if base_path.exists() else {}
    notes = noise_notes([base] if base else band[:1], band, ctx.params.promote.gates, scenario=split.scenario,
                        sizes=sizes, mia_key=f"mia/entropy_{ctx.params.evaluate.mia_classifier}")
    for note in notes:
        if ctx.log is not None:
            ctx.log({"note": note})


def _write(ctx: StageContext, record: ModelRecord, run: StageRun, metrics: dict[str, float]) -> ModelRecord:
    record.write(stage_dir(ctx.root, record.role) / MODEL_FILE)
    run.write(ctx.root / RUNS_DIR / f"{record.role}.json")
    write_json(metrics_file(ctx.root, record.role), metrics)
    return record


class CorruptProductionError(ValueError):
    """The production model a deletion run starts from does not verify: the run refuses, naming the way out."""


def _production_base(name: str, version: str, ckpt: Path, removed: list[str]) -> Any:
    """Fetch production `version` as this deletion run's base; a corrupt checkpoint, or one that does not
    honour the done requests (production moved outside unlearn), refuses the run."""
    mv = registry.client().get_model_version(name, version)
    missing = [h for h in removed if h not in mv.tags.get("honours", "").split(",")]
    if missing:
        raise CorruptProductionError(f"production v{version} of {name} does not honour {len(missing)} done deletion "
                                     f"request(s) ({', '.join(missing[:5])}): it was moved outside unlearn; a "
                                     "deletion run cannot start from it: `unlearn promote <version>` one that does")
    try:
        registry.fetch_checkpoint(mv.source, ckpt, mv.tags.get(registry.CHECKSUM_TAG),
                                  f"production v{version} of {name}")
    except registry.ChecksumError as err:
        raise CorruptProductionError(f"{err}; a deletion run cannot start from it: put a sound version back with "
                                     "`unlearn rollback`, or `unlearn promote <version> --force`") from None
    return mv


def _train_model(ctx: StageContext, role: str, band_seed: int | None = None) -> Any:
    """Train (or reuse) the `base` or `oracle` model; writes outputs/<role>/{model.pt,model.json}.

    With `band_seed`, an extra oracle of the retrain band at that training seed: its checkpoint stays in
    outputs/oracle/band-<seed>/, no record is written, and its metrics are returned.
    """
    import mlflow

    from unlearning.models import save_checkpoint
    from unlearning.steps import evaluate_model, train_oracle, train_original, with_training_seed
    from unlearning.utils import get_device

    from .version_data import load_split

    root, params = ctx.root, ctx.params
    stage = "train_base" if role == "base" else "retrain_oracle"
    outdir = stage_dir(root, role)
    if band_seed is not None:
        params, outdir = with_training_seed(params, band_seed), outdir / f"band-{band_seed}"
    outdir.mkdir(parents=True, exist_ok=True)
    if role == "oracle" and not params.evaluate.oracle:
        (outdir / CHECKPOINT).unlink(missing_ok=True)
        return _write(ctx, ModelRecord(role=role, skipped=True, reason="evaluate.oracle is false"),
                      StageRun(stage=stage, source="skipped"), {})

    split, info = load_split(root)
    lineage = info.lineage(forgets=role == "oracle")  # the base model saw this run's forget set
    name = registered_model_name(params)
    setup_mlflow(root, params)
    key = content_key(params, info, role)
    ckpt = outdir / CHECKPOINT
    device = get_device(params.train.device)

    # Looked up (and verified) before the run starts: a corrupt production model refuses the run here.
    source, mv, production = "trained", None, None
    if role == "base" and info.source == "deletion requests":
        production = registry.alias_version(name, "production")
        if production:
            mv = _production_base(name, production, ckpt, info.removed_requests)
            source = f"production v{production}"
            # What the unlearned versions honour starts from what this base honours (flows.production).
            lineage["honours"] = mv.tags.get("honours", "")
    if production is None:
        mv = registry.reuse_by_key(name, key, ckpt, registry.reporter(ctx.log, stage))
        if mv is not None:
            source = "reused"
    run_name = stage + (f" seed {band_seed}" if band_seed is not None else "") + (
        "" if source == "trained" else f" ({source})")
    tags = {**lineage, registry.KEY_TAG: key, registry.REUSED_TAG: str(source != "trained").lower(),
            "role": role, "data_touched": "retain" if role == "oracle" else "forget,retain",
            **({"reused_from": mv.run_id or ""} if mv is not None else {})}
    with stage_run(root, params, stage, run_name=run_name, parent_run_id=ctx.parent_run_id, tags=tags,
                   reused=source == "reused") as run:  # a reused model makes no run (tracking.stage_run)
        run.log_params(flatten({"data": params.data.model_dump(), "model": params.model.model_dump(),
                                "train": params.train.model_dump()}))
        metrics = None
        if mv is not None:
            model_uri, model_id, version = mv.source, registry.model_id_of(mv), str(mv.version)
            sha = registry.verify_checkpoint(ckpt, mv.tags.get(registry.CHECKSUM_TAG), f"{name} v{version}")
            # The band's summary is logged on the oracle's run after the fact: not this model's own metrics.
            prior = {k: v for k, v in registry.run_metrics(mv.run_id).items() if not k.startswith("band/")}
            if production is not None:
                time_s = float("nan")
                note = f"Deletion run: unlearning starts from production v{production}; nothing trained."
            else:
                time_s = prior.get("time/s", float("nan"))
                # The metrics of the run that made it (logged after its evaluation: a run killed earlier has
                # only `time/s`, and the model is evaluated here instead).
                metrics = prior if set(prior) - {"time/s"} else None
                note = f"Reused {name} v{version} (same content key {key}); nothing trained."
            run.set_tags({"mlflow.note.content": note})
        else:
            train_fn = train_original if role == "base" else train_oracle
            model, time_s = train_fn(params, split, log=ctx.log)
            save_checkpoint(model, ckpt)
            sha = registry.sha256_file(ckpt)
            model_id, model_uri = registry.log_model(ckpt, root, role if band_seed is None else f"oracle-seed{band_seed}")
            # Logged before registering: a run killed after it leaves a version that a rerun reuses, time included.
            mlflow.log_metric("time/s", time_s)
            version = registry.register(name, model_uri, {"role": role if band_seed is None else "oracle-band",
                                                          "run_id": run.run_id, registry.KEY_TAG: key,
                                                          registry.CHECKSUM_TAG: sha, **lineage,
                                                          "git_commit": git_commit(root)})
        run.set_tags({"model_uri": model_uri, "model_id": model_id, "registered_model": name,
                      "registered_version": version, registry.CHECKSUM_TAG: sha})
        if metrics is None:
            model = registry.load_verified(ckpt, sha, f"outputs/{role}/{CHECKPOINT}", device)
            metrics = evaluate_model(params, model, split, seed=params.evaluate.seeds[0])
            metrics["time/s"] = time_s
        # Finite values only, as MLflow keeps them: a reused model then writes the same metrics file.
        metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        run.log_metrics(metrics)
    if band_seed is not None:
        return metrics
    record = ModelRecord(role=role, model_uri=model_uri, model_id=model_id, registered_model=name, version=version,
                         key=key, time_s=time_s if math.isfinite(time_s) else None, checkpoint_sha256=sha,
                         from_production=production is not None, **lineage)
    return _write(ctx, record, StageRun(stage=stage, run_id=run.run_id, source=source,
                                        tracking_uri=tracking_uri(root, params),
                                        reused_from=mv.run_id if mv is not None else None), metrics)
