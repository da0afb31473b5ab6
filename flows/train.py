"""Stages `train_base` and `retrain_oracle`: the original model and the retain-only oracle.

Both are content-addressed: the key is hash(data version, forget request, model, training params, seed).
When MLflow already holds a finished run that trained a model under that key, its checkpoint is fetched
instead of training again, and this run says so (run name "... (reused)", tags `unlearn.reused=true`,
`reused_from=<run id>`). For a run that processes deletion requests, the base is the model in
`production` (unlearning starts from what is deployed); without one, the base model is trained.

`python -m flows.train base|oracle` is the DVC stage command.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from . import _common as C
from . import _registry as R


def content_key(params, info: dict[str, Any], role: str) -> str:
    """hash(data version, request, model, training params, seed) of a base or oracle model."""
    from unlearning.utils import content_hash

    # Device and compile change how, not what, is trained: they stay out of the key.
    train = params.train.model_dump(exclude={"device", "compile"})
    return content_hash({"role": role, "data": info["data_hash"], "request": info["request_hash"],
                         "model": params.model.model_dump(), "train": train, "seed": params.train.seed,
                         "data_name": params.data.model_dump()}, 16)


def _lineage(info: dict[str, Any]) -> dict[str, str]:
    return {"data_hash": info["data_hash"], "request_hash": info["request_hash"],
            "requests": ",".join(info.get("requests") or [])}


def train_model(root: Path, params, role: str, parent_run_id: str | None = None, log=None) -> dict[str, Any]:
    """Train (or reuse) the `base` or `oracle` model; writes outputs/<role>/{model.pt,run.json}.

    Returns:
        The run record: run id, model URI, registered model and version, reused flag, key, time.
    """
    import mlflow

    from unlearning.experiment import evaluate_model, train_oracle, train_original
    from unlearning.models import load_checkpoint, save_checkpoint
    from unlearning.utils import get_device

    from .prepare import load_split

    if role not in ("base", "oracle"):
        raise ValueError(f"'role' must be one of ['base', 'oracle']; got {role!r}")
    stage = "train_base" if role == "base" else "retrain_oracle"
    outdir = C.stage_dir(root, role)
    outdir.mkdir(parents=True, exist_ok=True)
    if role == "oracle" and not params.evaluate.oracle:
        record = {"skipped": True, "reason": "evaluate.oracle is false"}
        (outdir / C.CHECKPOINT).unlink(missing_ok=True)
        C.write_json(outdir / C.MODEL_FILE, record)
        C.write_json(C.metrics_file(root, role), {})
        C.write_json(root / C.RUNS_DIR / f"{role}.json", record)
        return record

    split, info = load_split(root)
    name = C.registered_model_name(params)
    exp_id = C.setup_mlflow(root, params)
    key = content_key(params, info, role)
    ckpt = outdir / C.CHECKPOINT
    device = get_device(params.train.device)

    source, prior, production = "trained", None, None
    if role == "base" and info["source"] == "deletion requests":
        production = R.alias_version(name, "production")
        if production:
            source = f"production v{production}"
    if production is None:
        prior = R.find_by_key(exp_id, key)
        if prior is not None:
            source = "reused"
    run_name = stage + ("" if source == "trained" else f" ({source})")
    tags = {**_lineage(info), R.KEY_TAG: key, R.REUSED_TAG: str(source != "trained").lower(),
            "role": role, "data_touched": "retain" if role == "oracle" else "forget,retain"}
    with C.stage_run(root, params, stage, run_name=run_name, parent_run_id=parent_run_id, tags=tags) as run:
        mlflow.log_params(C.flatten({"data": params.data.model_dump(), "model": params.model.model_dump(),
                                     "train": params.train.model_dump()}))
        if production is not None:
            mv = R.client().get_model_version(name, production)
            model_uri, version = f"models:/{name}/{production}", production
            R.fetch_checkpoint(model_uri, ckpt)
            time_s = float("nan")
            model_id = getattr(mv, "model_id", None) or ""
            mlflow.set_tags({"reused_from": mv.run_id or "", "mlflow.note.content":
                             f"Deletion run: unlearning starts from production v{production}; nothing trained."})
            metrics = None
        elif prior is not None:
            model_uri, model_id = prior.data.tags["model_uri"], prior.data.tags.get("model_id", "")
            version = prior.data.tags.get("registered_version", "")
            R.fetch_checkpoint(model_uri, ckpt)
            time_s = float(prior.data.metrics.get("time/s", float("nan")))
            metrics = dict(prior.data.metrics)
            mlflow.set_tags({"reused_from": prior.info.run_id, "mlflow.note.content":
                             f"Reused the model of run {prior.info.run_id} (same content key {key}); "
                             "nothing trained."})
        else:
            train_fn = train_original if role == "base" else train_oracle
            model, time_s = train_fn(params, split, log=log)
            save_checkpoint(model, ckpt)
            model_id, model_uri = R.log_model(ckpt)
            version = R.register(name, model_uri, {"role": role, "run_id": run.run_id, R.KEY_TAG: key, **_lineage(info),
                                                   "git_commit": C.git_commit(root)})
            mlflow.set_tags({"model_uri": model_uri, "model_id": model_id, "registered_model": name,
                             "registered_version": version})
            metrics = None
        if source != "trained":
            mlflow.set_tags({"model_uri": model_uri, "model_id": model_id, "registered_model": name,
                             "registered_version": version})
        if metrics is None:
            model = load_checkpoint(ckpt, device)
            metrics = evaluate_model(params, model, split, seed=params.evaluate.seeds[0])
            metrics["time/s"] = time_s
        # Finite values only, as MLflow keeps them: a reused model then writes the same metrics file.
        metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        mlflow.log_metrics(metrics)
    stable = {"model_uri": model_uri, "model_id": model_id, "registered_model": name, "version": version,
              "key": key, "time_s": time_s, "from_production": production is not None, **_lineage(info)}
    record = {**stable, "run_id": run.run_id, "source": source, "reused": source != "trained",
              "tracking_uri": C.tracking_uri(root, params)}
    C.write_json(outdir / C.MODEL_FILE, stable)
    C.write_json(root / C.RUNS_DIR / f"{role}.json", record)
    C.write_json(C.metrics_file(root, role), metrics)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.train", description="DVC stages train_base and "
                                     "retrain_oracle: train (or reuse) the original model or the oracle.")
    parser.add_argument("role", choices=["base", "oracle"])
    args = parser.parse_args(argv)
    C.dvc_stage_env()
    root = Path.cwd()
    record = train_model(root, C.load(root), args.role, log=C.Progress(args.role))
    print(f"{args.role}: {record.get('source', 'skipped')}"
          + (f", {record['registered_model']} v{record['version']}" if record.get("version") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
