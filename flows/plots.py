"""Plots of one evaluated model: per-class accuracy bars, confusion matrix, MIA signal histograms (PNG, for
MLflow) and the per-class accuracy CSV that dvc.yaml declares as a DVC plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def write_pngs(outdir: Path, method: str, split, models: dict[str, Any]) -> list[Path]:
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


def write_per_class_csv(path: Path, split, models: dict[str, Any]) -> None:
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
