"""Stage `evaluate[method]`: every metric of one unlearned model, against the base model and the oracle.

Writes `outputs/metrics/<method>.json` (DVC metrics, flat names), `outputs/plots/<method>.csv` (per-class
test accuracy of base, oracle and unlearned model: a DVC plot) and, under `outputs/evaluate/<method>/`,
the PNG plots that also go to MLflow: per-class accuracy, confusion matrix, MIA score histograms.
`python -m flows.evaluate <method>` is the DVC stage command.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

from . import _common as C


def _plots(outdir: Path, method: str, split, models: dict[str, Any]) -> list[Path]:
    """Per-class accuracy bars, confusion matrix and MIA histograms as PNGs; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from unlearning.metrics import confusion_matrix, mia_scores, per_class_accuracy

    ds = split.dataset
    files = []
    if ds.task == "classification":
        test = split.test()
        acc = {label: per_class_accuracy(m, test.to(next(m.parameters()).device), ds.num_classes)
               for label, m in models.items()}
        fig, ax = plt.subplots(figsize=(7, 3.2))
        width = 0.8 / len(acc)
        for i, (label, values) in enumerate(acc.items()):
            ax.bar(np.arange(ds.num_classes) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(ds.num_classes) + 0.4 - width / 2, ds.classes, rotation=45 if ds.num_classes > 10 else 0)
        ax.set(ylabel="test accuracy", ylim=(0, 1.05), title=f"{method}: per-class test accuracy")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        files.append(outdir / "per_class_accuracy.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

        cm = confusion_matrix(models["unlearned"], test.to(next(models["unlearned"].parameters()).device),
                              ds.num_classes)
        fig, ax = plt.subplots(figsize=(4.6, 4))
        im = ax.imshow(cm, cmap="Blues")
        ax.set(xlabel="predicted", ylabel="true", title=f"{method}: confusion (test)")
        if ds.num_classes <= 20:
            ax.set_xticks(range(ds.num_classes), ds.classes)
            ax.set_yticks(range(ds.num_classes), ds.classes)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        files.append(outdir / "confusion_matrix.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

    scores = mia_scores(models["unlearned"], split)
    signal = "entropy" if "forget/entropy" in scores else next(iter(scores)).split("/")[1]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for part in ("retain", "test", "forget"):
        values = scores.get(f"{part}/{signal}")
        if values is not None and len(values):
            ax.hist(values[np.isfinite(values)], bins=40, density=True, histtype="step", label=part, linewidth=1.5)
    ax.set(xlabel=f"per-sample {signal}", ylabel="density", title=f"{method}: MIA signal ({signal})")
    ax.legend()
    fig.tight_layout()
    files.append(outdir / "mia_histogram.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def _per_class_csv(path: Path, split, models: dict[str, Any]) -> None:
    """`class,original,oracle,unlearned` rows of per-class test accuracy (the DVC plot)."""
    from unlearning.metrics import per_class_accuracy

    ds = split.dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "original", "oracle", "unlearned"])
        if ds.task != "classification":
            return
        if not models:
            return
        test = split.test()
        acc = {k: per_class_accuracy(m, test.to(next(m.parameters()).device), ds.num_classes)
               for k, m in models.items()}
        for c, label in enumerate(ds.classes):
            w.writerow([label] + [f"{acc[k][c]:.4f}" if k in acc and not math.isnan(acc[k][c]) else ""
                                  for k in ("original", "oracle", "unlearned")])


def evaluate_method(root: Path, params, method: str, parent_run_id: str | None = None) -> dict[str, Any]:
    """Score the unlearned model of `method`; returns `{"run_id", "metrics", "metrics_file", ...}`."""
    import mlflow

    from unlearning.experiment import evaluate_model
    from unlearning.models import load_checkpoint
    from unlearning.utils import get_device

    from .prepare import load_split

    split, info = load_split(root)
    device = get_device(params.evaluate.device)
    unl_rec = C.read_json(C.stage_dir(root, "unlearn", method) / C.RUN_FILE)
    if unl_rec.get("skipped"):  # nothing to score; the DVC outs still exist and say so
        outdir = C.stage_dir(root, "evaluate", method)
        outdir.mkdir(parents=True, exist_ok=True)
        _per_class_csv(root / C.PLOTS_DIR / f"{method}.csv", split, {})
        C.write_json(C.metrics_file(root, method), {})
        record = {"skipped": True, "reason": unl_rec["reason"], "method": method, "run_id": unl_rec["run_id"],
                  "tracking_uri": C.tracking_uri(root, params)}
        C.write_json(outdir / C.RUN_FILE, record)
        return {**record, "metrics": {}}
    base_rec = C.read_json(C.stage_dir(root, "base") / C.MODEL_FILE)
    oracle_rec = C.read_json(C.stage_dir(root, "oracle") / C.MODEL_FILE)
    original = load_checkpoint(C.stage_dir(root, "base") / C.CHECKPOINT, device)
    oracle = None
    if not oracle_rec.get("skipped"):
        oracle = load_checkpoint(C.stage_dir(root, "oracle") / C.CHECKPOINT, device)
    model = load_checkpoint(C.stage_dir(root, "unlearn", method) / C.CHECKPOINT, device)
    outdir = C.stage_dir(root, "evaluate", method)
    outdir.mkdir(parents=True, exist_ok=True)

    seed = params.evaluate.seeds[0]
    lineage = {"data_hash": info["data_hash"], "request_hash": info["request_hash"], "method": method,
               "requests": ",".join(info.get("requests") or []), "model_version": unl_rec["version"]}
    with C.stage_run(root, params, "evaluate", run_name=f"evaluate[{method}]", parent_run_id=parent_run_id,
                     tags={**lineage, "data_touched": "forget,retain,test (evaluation)"}) as run:
        mlflow.log_params(C.flatten(params.evaluate.model_dump(), "evaluate."))
        metrics = evaluate_model(params, model, split, original=original, oracle=oracle, seed=seed)
        metrics["time/s"] = float(unl_rec["time_s"])
        # Speedup over retraining: the oracle's training time (measured when it was trained, also when reused).
        ref = oracle_rec.get("time_s") if oracle is not None else base_rec.get("time_s")
        if isinstance(ref, int | float) and ref == ref and metrics["time/s"] > 0:
            metrics["speedup"] = float(ref) / metrics["time/s"]
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        mlflow.log_metrics(finite, model_id=unl_rec.get("model_id") or None)
        models = {"original": original, "unlearned": model} | ({"oracle": oracle} if oracle is not None else {})
        for png in _plots(outdir, method, split, models):
            mlflow.log_artifact(str(png), "plots")
        csv_path = root / C.PLOTS_DIR / f"{method}.csv"
        _per_class_csv(csv_path, split, models)
        mlflow.log_artifact(str(csv_path), "plots")
    C.write_json(C.metrics_file(root, method), metrics)
    record = {**lineage, "run_id": run.run_id,
              "tracking_uri": C.tracking_uri(root, params), "metrics_file": str(C.metrics_file(root, method).relative_to(root))}
    C.write_json(outdir / C.RUN_FILE, record)
    return {**record, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.evaluate",
                                     description="DVC stage evaluate@<method>: metrics and plots of one method.")
    parser.add_argument("method")
    args = parser.parse_args(argv)
    C.dvc_stage_env()
    root = Path.cwd()
    out = evaluate_method(root, C.load(root), args.method)
    m = out["metrics"]
    print(f"evaluate[{args.method}]: " + ", ".join(f"{k} {m[k]:.3f}" for k in ("forget/acc", "retain/acc", "test/acc")
                                                   if k in m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
