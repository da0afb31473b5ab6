"""Stage `unlearn[method]`: run one method on the base model, log and register the result.

The new version is tagged with its lineage (data version, request, base version, method, the data the
method touched) and gets the alias `candidate-<method>` (an MLflow alias names one version, so each
method keeps its own candidate). `python -m flows.unlearn <method>` is the DVC stage command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import _common as C
from . import _registry as R


def unlearn_method(root: Path, params, method: str, parent_run_id: str | None = None, log=None) -> dict[str, Any]:
    """Unlearn the request from the base model with `method`; writes outputs/unlearn/<method>/.

    Returns:
        The run record: run id, model URI, registered model and version, time, data touched.
    """
    import mlflow

    from unlearning.experiment import method_config, run_method
    from unlearning.methods import METHODS, unsupported_reason
    from unlearning.models import load_checkpoint, save_checkpoint
    from unlearning.utils import get_device

    from .prepare import load_split

    info_m = METHODS.get(method)
    split, info = load_split(root)
    base = C.read_json(C.stage_dir(root, "base") / C.MODEL_FILE)
    outdir = C.stage_dir(root, "unlearn", method)
    outdir.mkdir(parents=True, exist_ok=True)
    reason = unsupported_reason(method, split)
    if reason:
        # e.g. a class-only method in a run that processes deletion requests (sample ids): skip it, say why.
        return skip_method(root, params, method, parent_run_id, outdir, info, reason)
    device = get_device(params.train.device)
    original = load_checkpoint(C.stage_dir(root, "base") / C.CHECKPOINT, device)
    seed = params.evaluate.seeds[0]
    cfg = method_config(params, method)
    name = C.registered_model_name(params)
    lineage = {"data_hash": info["data_hash"], "request_hash": info["request_hash"],
               "requests": ",".join(info.get("requests") or []), "base_version": base.get("version", ""),
               "method": method}
    needs = ",".join(sorted(info_m.needs)) or "none"
    with C.stage_run(root, params, "unlearn", run_name=f"unlearn[{method}]", parent_run_id=parent_run_id,
                     tags={**lineage, "data_declared": needs}) as run:
        mlflow.log_params({"method": method, "seed": seed, **C.flatten(cfg.model_dump(), f"{method}.")})
        result = run_method(params, method, original, split, seed=seed, log=log)
        ckpt = save_checkpoint(result.model, outdir / C.CHECKPOINT)
        touched = ",".join(result.touched) or "none"
        model_id, model_uri = R.log_model(ckpt)
        mlflow.log_metrics({"time/s": result.time_s})
        version = R.register(name, model_uri, {"role": "unlearned", "run_id": run.run_id, "data_touched": touched,
                                               "git_commit": C.git_commit(root), **lineage})
        R.set_alias(name, f"candidate-{method}", version)
        mlflow.set_tags({"data_touched": touched, "model_uri": model_uri, "model_id": model_id,
                         "registered_model": name, "registered_version": version})
    record = {"run_id": run.run_id, "model_uri": model_uri, "model_id": model_id, "registered_model": name,
              "version": version, "method": method, "time_s": result.time_s, "touched": result.touched,
              "tracking_uri": C.tracking_uri(root, params), **lineage}
    C.write_json(outdir / C.RUN_FILE, record)
    return record


def skip_method(root: Path, params, method: str, parent_run_id: str | None, outdir: Path, info: dict[str, Any],
                reason: str) -> dict[str, Any]:
    """Record a method that does not apply to this request (its outputs say so; no model)."""
    import mlflow

    (outdir / C.CHECKPOINT).unlink(missing_ok=True)
    with C.stage_run(root, params, "unlearn", run_name=f"unlearn[{method}] (skipped)", parent_run_id=parent_run_id,
                     tags={"method": method, "data_hash": info["data_hash"], "request_hash": info["request_hash"],
                           "data_touched": "none", "skipped": "true"}) as run:
        mlflow.set_tag("mlflow.note.content", f"Skipped: {reason}")
    record = {"skipped": True, "reason": reason, "method": method, "run_id": run.run_id,
              "tracking_uri": C.tracking_uri(root, params)}
    C.write_json(outdir / C.RUN_FILE, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.unlearn",
                                     description="DVC stage unlearn@<method>: run one unlearning method.")
    parser.add_argument("method")
    args = parser.parse_args(argv)
    C.dvc_stage_env()
    root = Path.cwd()
    rec = unlearn_method(root, C.load(root), args.method, log=C.Progress(args.method))
    if rec.get("skipped"):
        print(f"unlearn[{args.method}]: skipped: {rec['reason']}")
        return 0
    print(f"unlearn[{args.method}]: {rec['registered_model']} v{rec['version']} in {rec['time_s']:.2f} s, "
          f"touched {rec['touched'] or ['none']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
