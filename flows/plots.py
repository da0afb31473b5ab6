"""Plots: per evaluated model, per-class accuracy bars, confusion matrix, MIA signal histograms (PNG, for
MLflow) and the per-class accuracy of the original, oracle and unlearned model (CSV data and its chart,
the DVC plot of the method); per pipeline run, the comparison of every model (the DVC plot of the run).

The DVC plots are images: `dvc plots show` embeds them as <img>, so its page renders offline (its vega
plots load vega from a CDN and stay blank without the network).

Each model is scored on the test set once (`confusions`): the bars, the confusion matrix and the CSV all
come from those counts. Figures use matplotlib's object API, not pyplot: pyplot keeps one global figure
registry, shared by the evaluate tasks that a flow runs at once in threads, and a stage needs no window.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import plot_worker

DPI = 110
ROLES = ("original", "oracle", "unlearned")  # the columns of a method's per-class CSV
COLOURS = {"original": "tab:gray", "oracle": "tab:blue", "unlearned": "tab:orange"}
VERDICT_COLOURS = {1.0: "tab:green", 0.5: "tab:olive", 0.0: "tab:red"}  # summary verdict: pass, inconclusive, fail


def confusions(split, models: dict[str, Any]) -> dict[str, Any]:
    """Each model's confusion matrix on the test set (int64 [C, C]); {} for regression or no models."""
    from unlearning.metrics import confusion_matrix

    ds = split.dataset
    if ds.task != "classification" or not models:
        return {}
    test = split.test()
    return {label: confusion_matrix(m, test.to(next(m.parameters()).device), ds.num_classes)
            for label, m in models.items()}


def _fit(fig, classes: Sequence[str] = (), **margins: float) -> None:
    """Fixed margins for short class names; `tight_layout` (which lays every text out to measure it: a third
    of a small figure's cost) only where names are many or long and could be clipped."""
    if len(classes) > 10 or max((len(str(c)) for c in classes), default=0) > 8:
        fig.tight_layout()
    else:
        fig.subplots_adjust(**margins)


def _per_class_bars(ax, classes: Sequence[str], acc: Mapping[str, Sequence[float]], title: str) -> None:
    """Grouped bars of per-class test accuracy, one colour per model (nan: no bar)."""
    import numpy as np

    width = 0.8 / max(len(acc), 1)
    for i, (label, values) in enumerate(acc.items()):
        ax.bar(np.arange(len(classes)) + i * width, values, width, label=label, color=COLOURS.get(label))
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45 if len(classes) > 10 else 0)
    ax.set(ylabel="test accuracy", ylim=(0, 1.05), title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def write_pngs(outdir: Path, method: str, split, models: dict[str, Any],
               cms: dict[str, Any] | None = None, bars: Path | None = None) -> list[Path]:
    """Per-class accuracy bars, confusion matrix and MIA histograms as PNGs; returns the files.

    `cms`: the models' test confusion matrices when the caller has them (`confusions`). `bars`: the method's
    DVC plot (`write_per_class`), the same chart, copied rather than drawn again. The figures are drawn in
    the flow's plot worker when it runs (`flows.plot_worker`): only their data crosses over.
    """
    import shutil

    import numpy as np

    from unlearning.metrics import class_accuracies, mia_scores

    ds = split.dataset
    files, drawings = [], []
    if ds.task == "classification":
        cms = confusions(split, models) if cms is None else cms
        files.append(outdir / "per_class_accuracy.png")
        if bars is not None and bars.exists():
            shutil.copyfile(bars, files[-1])
        else:
            drawings.append(plot_worker.draw(_save_bars, files[-1], list(ds.classes), {
                k: class_accuracies(cms[k]) for k in ROLES if k in cms}, f"{method}: per-class test accuracy"))
        files.append(outdir / "confusion_matrix.png")
        drawings.append(plot_worker.draw(_save_confusion, files[-1], np.asarray(cms["unlearned"]),
                                         list(ds.classes), f"{method}: confusion (test)"))
    scores = mia_scores(models["unlearned"], split)
    signal = "entropy" if "forget/entropy" in scores else next(iter(scores)).split("/")[1]
    parts = {part: np.asarray(values)[np.isfinite(values)] for part in ("retain", "test", "forget")
             if (values := scores.get(f"{part}/{signal}")) is not None and len(values)}
    files.append(outdir / "mia_histogram.png")
    drawings.append(plot_worker.draw(_save_hist, files[-1], parts, signal, f"{method}: MIA signal ({signal})"))
    for drawing in drawings:
        drawing.result()
    return files


def _save_confusion(png: Path, cm, classes: Sequence[str], title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4))
    ax = fig.subplots()
    _fit(fig, classes, left=0.12, right=0.97, bottom=0.12, top=0.92)  # before the colorbar takes its share
    im = ax.imshow(cm, cmap="Blues")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 20:
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
    fig.colorbar(im, ax=ax)
    fig.savefig(png, dpi=DPI)


def _save_hist(png: Path, parts: Mapping[str, Any], signal: str, title: str) -> None:
    """Density histograms of one MIA signal per part (retain, test, forget)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for part, values in parts.items():
        ax.hist(values, bins=40, density=True, histtype="step", label=part, linewidth=1.5)
    ax.set(xlabel=f"per-sample {signal}", ylabel="density", title=title)
    ax.legend()
    _fit(fig, left=0.1, right=0.97, bottom=0.15, top=0.9)
    fig.savefig(png, dpi=DPI)


def write_per_class(path: Path, split, models: dict[str, Any], cms: dict[str, Any] | None = None) -> list[Path]:
    """A method's DVC plot: `<method>.csv` (rows `class,original,oracle,unlearned` of per-class test accuracy)
    and `<method>.png` beside it, the same numbers as bars of all three models. Returns both files.

    Without per-class accuracy (regression, or a skipped method: no `models`) the CSV has its header only
    and the PNG says why, so both DVC outs always exist.
    """
    from unlearning.metrics import class_accuracies

    ds = split.dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    acc: dict[str, list[float]] = {}
    if ds.task == "classification" and models:
        cms = confusions(split, models) if cms is None else cms
        acc = {k: class_accuracies(cms[k]) for k in ROLES if k in cms}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", *ROLES])
        for c, label in enumerate(ds.classes if acc else []):
            w.writerow([label] + [f"{acc[k][c]:.4f}" if k in acc and not math.isnan(acc[k][c]) else "" for k in ROLES])
    png = path.with_suffix(".png")
    if acc:
        plot_worker.draw(_save_bars, png, list(ds.classes), acc, f"{path.stem}: per-class test accuracy").result()
    else:
        _save_note(png, f"{path.stem}: no per-class accuracy ("
                   + ("regression task)" if ds.task != "classification" else "method skipped)"))
    return [path, png]


def _save_bars(png: Path, classes: Sequence[str], acc: Mapping[str, Sequence[float]], title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    _per_class_bars(fig.subplots(), classes, acc, title)
    _fit(fig, classes, left=0.08, right=0.84, bottom=0.1, top=0.9)  # the legend sits right of the axes
    fig.savefig(png, dpi=DPI)


def _save_note(png: Path, text: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 1))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    fig.savefig(png, dpi=DPI)


def read_per_class(plots_dir: Path, methods: Sequence[str]) -> tuple[list[str], dict[str, list[float]]]:
    """Per-class test accuracy of the original, the oracle and each method's model from the methods' CSVs
    (`write_per_class`): (classes, {model: values}); nan where a CSV has no value, ([], {}) without rows."""
    classes: list[str] = []
    acc: dict[str, list[float]] = {}
    for method in methods:
        path = plots_dir / f"{method}.csv"
        rows = list(csv.DictReader(path.open())) if path.exists() else []
        if not rows:
            continue
        classes = classes or [r["class"] for r in rows]
        columns = {k: [float(r[k]) if r.get(k) else math.nan for r in rows] for k in ROLES}
        for role in ("original", "oracle"):  # the same models under every method: taken once
            if role not in acc and not all(math.isnan(v) for v in columns[role]):
                acc[role] = columns[role]
        acc[method] = columns["unlearned"]
    return classes, {k: acc[k] for k in ("original", "oracle", *methods) if k in acc}


def write_comparison(png: Path, summary: Mapping[str, Mapping[str, float]], classes: Sequence[str],
                     per_class: Mapping[str, Sequence[float]]) -> Path:
    """The run's DVC plot: every model (original, oracle, each method) on one figure, one row per model.

    Left: forget, retain and test score (accuracy, or MAE for regression) and the entropy-MIA rate of each
    model, with the oracle's values as dashed lines; a method's name is coloured by its verdict (summary
    `verdict`: 1 pass, 0.5 inconclusive, 0 fail). Right, for classification: per-class test accuracy of
    every model as a heat map on the same rows.
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = list(summary)
    unit = "acc" if any("forget/acc" in m for m in summary.values()) else "mae"
    mia = next((k for m in summary.values() for k in m if k.startswith("mia/")), None)
    series = {f"forget/{unit}": ("X", "tab:red"), f"retain/{unit}": ("o", "tab:green"),
              f"test/{unit}": ("^", "tab:blue"), **({mia: ("d", "tab:purple")} if mia else {})}
    heat = bool(classes) and bool(per_class)
    fig = Figure(figsize=(14 if heat else 7, 1.2 + 0.38 * len(names)))
    axes = fig.subplots(1, 2, width_ratios=[1, 1.4], sharey=True) if heat else [fig.subplots()]
    ax, rows = axes[0], np.arange(len(names))
    for key, (marker, colour) in series.items():
        values = [summary[n].get(key, math.nan) for n in names]
        ax.scatter(values, rows, marker=marker, color=colour, s=36, label=key, zorder=3)
        if "oracle" in summary and key in summary["oracle"]:
            ax.axvline(summary["oracle"][key], color=colour, lw=0.8, ls="--", alpha=0.6)
    ax.set_yticks(rows, names)
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        verdict = summary[name].get("verdict")
        tick.set_color("black" if verdict is None else VERDICT_COLOURS.get(verdict, "tab:gray"))
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set(xlabel=unit if unit == "mae" else "accuracy / MIA rate",
           title="every model (dashed: the oracle; names: green passed, olive inconclusive, red failed)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], ls="", marker=m, color=c, label=k) for k, (m, c) in series.items()]
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.06), ncol=len(series),
              frameon=False)
    if heat:
        ax = axes[1]
        values = np.array([per_class.get(n, [math.nan] * len(classes)) for n in names], dtype=float)
        im = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 10 else 0)
        if len(classes) <= 20:
            for (i, j), v in np.ndenumerate(values):
                if math.isfinite(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
        ax.set(xlabel="class", title="per-class test accuracy (%)")
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=DPI)
    return png
