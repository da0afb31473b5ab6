"""Plots of one evaluated model: per-class accuracy bars, confusion matrix, MIA signal histograms (PNG, for
MLflow) and the per-class accuracy CSV that dvc.yaml declares as a DVC plot.

Each model is scored on the test set once (`confusions`): the bars, the confusion matrix and the CSV all
come from those counts. Figures use matplotlib's object API, not pyplot: pyplot keeps one global figure
registry, shared by the evaluate tasks that a flow runs at once in threads, and a stage needs no window.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

DPI = 110


def confusions(split, models: dict[str, Any]) -> dict[str, Any]:
    """Each model's confusion matrix on the test set (int64 [C, C]); {} for regression or no models."""
    from unlearning.metrics import confusion_matrix

    ds = split.dataset
    if ds.task != "classification" or not models:
        return {}
    test = split.test()
    return {label: confusion_matrix(m, test.to(next(m.parameters()).device), ds.num_classes)
            for label, m in models.items()}


def write_pngs(outdir: Path, method: str, split, models: dict[str, Any],
               cms: dict[str, Any] | None = None) -> list[Path]:
    """Per-class accuracy bars, confusion matrix and MIA histograms as PNGs; returns the files.

    `cms`: the models' test confusion matrices when the caller has them (`confusions`).
    """
    import numpy as np
    from matplotlib.figure import Figure

    from unlearning.metrics import class_accuracies, mia_scores

    ds = split.dataset
    files = []
    if ds.task == "classification":
        cms = confusions(split, models) if cms is None else cms
        acc = {label: class_accuracies(cm) for label, cm in cms.items()}
        fig = Figure(figsize=(7, 3.2))
        ax = fig.subplots()
        width = 0.8 / len(acc)
        for i, (label, values) in enumerate(acc.items()):
            ax.bar(np.arange(ds.num_classes) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(ds.num_classes) + 0.4 - width / 2, ds.classes, rotation=45 if ds.num_classes > 10 else 0)
        ax.set(ylabel="test accuracy", ylim=(0, 1.05), title=f"{method}: per-class test accuracy")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        files.append(outdir / "per_class_accuracy.png")
        fig.savefig(files[-1], dpi=DPI)

        fig = Figure(figsize=(4.6, 4))
        ax = fig.subplots()
        im = ax.imshow(cms["unlearned"], cmap="Blues")
        ax.set(xlabel="predicted", ylabel="true", title=f"{method}: confusion (test)")
        if ds.num_classes <= 20:
            ax.set_xticks(range(ds.num_classes), ds.classes)
            ax.set_yticks(range(ds.num_classes), ds.classes)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        files.append(outdir / "confusion_matrix.png")
        fig.savefig(files[-1], dpi=DPI)

    scores = mia_scores(models["unlearned"], split)
    signal = "entropy" if "forget/entropy" in scores else next(iter(scores)).split("/")[1]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for part in ("retain", "test", "forget"):
        values = scores.get(f"{part}/{signal}")
        if values is not None and len(values):
            ax.hist(values[np.isfinite(values)], bins=40, density=True, histtype="step", label=part, linewidth=1.5)
    ax.set(xlabel=f"per-sample {signal}", ylabel="density", title=f"{method}: MIA signal ({signal})")
    ax.legend()
    fig.tight_layout()
    files.append(outdir / "mia_histogram.png")
    fig.savefig(files[-1], dpi=DPI)
    return files


def write_per_class_csv(path: Path, split, models: dict[str, Any], cms: dict[str, Any] | None = None) -> None:
    """`class,original,oracle,unlearned` rows of per-class test accuracy (the DVC plot)."""
    from unlearning.metrics import class_accuracies

    ds = split.dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "original", "oracle", "unlearned"])
        if ds.task != "classification":
            return
        if not models:
            return
        cms = confusions(split, models) if cms is None else cms
        acc = {k: class_accuracies(cm) for k, cm in cms.items()}
        for c, label in enumerate(ds.classes):
            w.writerow([label] + [f"{acc[k][c]:.4f}" if k in acc and not math.isnan(acc[k][c]) else ""
                                  for k in ("original", "oracle", "unlearned")])
