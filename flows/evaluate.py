"""Stage `evaluate[method]`: every metric of one unlearned model, against the base model and the oracle.

With `evaluate.more_seeds`, the models of those unlearning seeds (flows.unlearn_seed, one stage each) are
scored too: the metrics are means over seeds with 95 % intervals (`ci`; `<metric>/ci_low|ci_high` in MLflow),
and `runs.json` keeps each seed's metrics for the gates; one model gets bootstrap intervals over its samples.
Models of seeds no longer listed are deleted first, never scored.

Writes `outputs/metrics/<method>.json` (all metrics; the DVC metrics are the run's summary, flows.summary_metrics),
`outputs/plots/<method>.csv` and `.png` (per-class test accuracy of base, oracle and unlearned model: the DVC
plot) and, under `outputs/evaluate/<method>/`, the PNG plots that
also go to MLflow, `runs.json`, `details.json` (the HTML report's data of the registered model) and the
stage's `EvalRecord` (content only; this run's MLflow run is in `outputs/runs/evaluate-<method>.json`).
Every model.pt read here is checked against its SHA-256.
"""

from __future__ import annotations

import math
import time

from . import _registry as registry
from .context import StageContext
from .plots import confusions, write_per_class, write_pngs
from .profiles import method_settings
from .records import EvalRecord, ModelRecord, SeedRecord, StageRun, UnlearnRecord, write_json
from .settings import (
    CHECKPOINT,
    MEMBERSHIP_FILE,
    MODEL_FILE,
    PLOTS_DIR,
    RECORD_FILE,
    metrics_file,
    stage_dir,
    tracking_uri,
)
from .tracking import flatten, method_params, stage_run
from .unlearn_seed import prune_stale, seed_dir

RUNS_FILE = "runs.json"  # outputs/evaluate/<method>/: one metric dict per unlearning seed
DETAILS_FILE = "details.json"  # outputs/evaluate/<method>/: the report data of the registered model


def evaluate(ctx: StageContext, method: str) -> EvalRecord:
    """Score the unlearned model of `method`; writes its metrics, plots and record."""
    import mlflow
    from mlflow.entities import Metric, Param

    from unlearning.metrics.membership import MembershipReference
    from unlearning.metrics.report import EVAL_CPU_THREADS
    from unlearning.report import model_details
    from unlearning.stats import ci_metrics, rate_sizes, summarize
    from unlearning.steps import evaluate_model, timing_metrics
    from unlearning.utils import cpu_threads, get_device

    from .version_data import load_split

    root, params = ctx.root, ctx.params
    split, info = load_split(root)
    device = get_device(params.evaluate.device)
    unlearned = UnlearnRecord.read(stage_dir(root, "unlearn", method) / RECORD_FILE)
    outdir = stage_dir(root, "evaluate", method)
    outdir.mkdir(parents=True, exist_ok=True)
    csv_path = root / PLOTS_DIR / f"{method}.csv"
    runs_file = StageRun.path(root, "evaluate", method)
    prune_stale(root, method, params.evaluate.seeds[1:])  # a seed dropped from params is not scored
    if unlearned.skipped:  # nothing to score; the DVC outs still exist and say so
        write_per_class(csv_path, split, {})
        write_json(metrics_file(root, method), {})
        record = EvalRecord(method=method, skipped=True, reason=unlearned.reason, **info.lineage())
        record.write(outdir / RECORD_FILE)
        StageRun(stage="evaluate", source="skipped", tracking_uri=tracking_uri(root, params)).write(runs_file)
        return record
    base_rec = ModelRecord.read(stage_dir(root, "base") / MODEL_FILE)
    oracle_rec = ModelRecord.read(stage_dir(root, "oracle") / MODEL_FILE)

    def load(rec: ModelRecord | UnlearnRecord, *where: str):
        path = stage_dir(root, *where) / CHECKPOINT
        return registry.load_verified(path, rec.checkpoint_sha256, str(path.relative_to(root)), device)

    original = load(base_rec, "base")
    oracle = None if oracle_rec.skipped else load(oracle_rec, "oracle")
    band_file = stage_dir(root, "oracle") / MEMBERSHIP_FILE
    membership = MembershipReference.load(band_file) if oracle is not None and band_file.exists() else None
    model = load(unlearned, "unlearn", method)

    seed = params.evaluate.seeds[0]
    tags = {**info.lineage(), "method": method, "model_version": unlearned.version or "",
            "data_touched": "forget,retain,test (evaluation)"}
    with stage_run(root, params, "evaluate", run_name=f"evaluate[{method}]", parent_run_id=ctx.parent_run_id,
                   tags=tags) as run:
        # Speedup over retraining: the oracle's training time (measured when it was trained, also when reused).
        reference = oracle_rec.time_s if oracle is not None else base_rec.time_s
        runs = [{"seed": seed, **evaluate_model(params, model, split, original=original, oracle=oracle, seed=seed,
                                             membership=membership),
                 **timing_metrics(float(unlearned.time_s or 0.0), reference)}]
        for other in params.evaluate.seeds[1:]:  # the other unlearning seeds' models (flows.unlearn_seed)
            rec = SeedRecord.read(seed_dir(root, method, other) / RECORD_FILE)
            path = seed_dir(root, method, other) / CHECKPOINT
            seeded = registry.load_verified(path, rec.checkpoint_sha256, str(path.relative_to(root)), device)
            runs.append({"seed": other, **evaluate_model(params, seeded, split, original=original, oracle=oracle,
                                                         seed=other, membership=membership),
                         **timing_metrics(float(rec.time_s or 0.0), reference)})
        summary = summarize(runs, rate_sizes(split))
        metrics = {k: float(v) for k, v in summary.items() if k not in ("ci", "n_seeds")}
        finite = {k: v for k, v in {**metrics, **ci_metrics(summary), "n_seeds": float(len(runs))}.items()
                  if math.isfinite(v)}
        # Params and metrics in one write (what log_params + log_metrics(model_id=) log, in two): the ten
        # evaluate tasks of a flow write to one sqlite store at once. The method and its hyperparameters
        # are params here too, so a comparison of evaluate runs can label and colour them by method.
        now, model_id = int(time.time() * 1000), unlearned.model_id or None
        logged = {**flatten(params.evaluate.model_dump(), "evaluate."),
                  **method_params(method, method_settings(params, root, split).params.unlearn.method_config(method),
                                  split, seed)}  # the settings unlearn[<method>] ran with (profile included)
        mlflow.MlflowClient().log_batch(
            run.run_id, params=[Param(k, v) for k, v in logged.items()],
            metrics=[Metric(k, v, now, 0, model_id=model_id, run_id=run.run_id) for k, v in finite.items()])
        models = {"original": original, "unlearned": model} | ({"oracle": oracle} if oracle is not None else {})
        with cpu_threads(EVAL_CPU_THREADS, device):  # small predictions, like evaluate's own (see there)
            cms = confusions(split, models)  # each model scored on the test set once, for PNGs and CSV
            bars = write_per_class(csv_path, split, models, cms)[1]
            pngs = write_pngs(outdir, method, split, models, cms, bars=bars)
            details = model_details(model, split)  # the report's distributions and per-class accuracy
        for path in (*pngs, csv_path):
            mlflow.log_artifact(str(path), "plots")
        write_json(metrics_file(root, method), {**metrics, "ci": summary["ci"], "n_seeds": len(runs)})
        write_json(outdir / RUNS_FILE, {"runs": runs})  # per seed: what the gates weigh
    write_json(outdir / DETAILS_FILE, details)
    record = EvalRecord(method=method, model_version=unlearned.version,
                        checkpoint_sha256=unlearned.checkpoint_sha256,
                        metrics_file=str(metrics_file(root, method).relative_to(root)), **info.lineage())
    record.write(outdir / RECORD_FILE)
    StageRun(stage="evaluate", run_id=run.run_id, source="evaluated",
             tracking_uri=tracking_uri(root, params)).write(runs_file)
    return record
