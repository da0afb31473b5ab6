"""How cost grows (issue #15, item 2): time of each method and of retraining as the request and the training set grow.

Request sweep on one base model: random 1 %, 5 %, 10 %, 30 % and 1, 2, 5 classes. Size sweep: 25 %, 50 %,
100 % of the training set, each with its own base model, forgetting a random 10 %. Each point times the
retrain oracle (the recipe on D_r) and every method (library timers; one untimed run of each method on a
small split first, so lazy imports and first calls are not in any figure). Prints a table of times and of
method / retrain ratios, fits log-log slopes by least squares and classifies each method:

    forget set  slope over the random sweep (time vs |D_f|) >= 0.5
    retain set  otherwise, and slope over the size sweep (time vs |D|, |D_f| = 10 % of it) >= 0.5
    neither     both slopes < 0.5 (a fixed step budget)

Writes JSON and a log-log PNG. MNIST, cnn width 16, a 3-epoch recipe; `--quick` keeps 4,000 training images
(the size sweep is then of that subset) so a 2-core CPU does it in about 25 minutes:

    nice -n 10 .venv/bin/python bench/growth.py --data-root ../shared/datasets --quick
    # data: <root>/MNIST/raw/*.gz (torchvision layout)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unlearning.config import RequestConfig  # noqa: E402
from unlearning.data import Dataset  # noqa: E402
from unlearning.datasets import load_dataset  # noqa: E402
from unlearning.methods import unsupported_reason  # noqa: E402
from unlearning.params import Params, load_params  # noqa: E402
from unlearning.requests import resolve  # noqa: E402
from unlearning.steps import run_method, train_oracle, train_original  # noqa: E402

REQUESTS = {"random 1%": {"random": 0.01}, "random 5%": {"random": 0.05}, "random 10%": {"random": 0.1},
            "random 30%": {"random": 0.3}, "1 class": {"classes": [3]}, "2 classes": {"classes": [3, 8]},
            "5 classes": {"classes": [0, 2, 3, 5, 8]}}
SIZES = (0.25, 0.5)  # plus 1.0: the "random 10%" point of the request sweep
RANDOM_POINTS = ("random 1%", "random 5%", "random 10%", "random 30%")
CLASS_POINTS = ("1 class", "2 classes", "5 classes")
RULE = ("forget set: slope vs |D_f| (random sweep) >= 0.5; retain set: otherwise, and slope vs |D| (size sweep, "
        "forget 10 %) >= 0.5; neither: both < 0.5")


def subset(ds: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """The first `n` of a seeded permutation of the training set (sorted: ids stay in order)."""
    if n is None or n >= len(ds.y_train):
        return ds
    idx = torch.randperm(len(ds.y_train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return dataclasses.replace(ds, x_train=ds.x_train[idx], y_train=ds.y_train[idx])


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y on log x over the finite points (nan with fewer than two)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(b) and b > 0]
    if len(pairs) < 2:
        return float("nan")
    return float(np.polyfit(np.log([a for a, _ in pairs]), np.log([b for _, b in pairs]), 1)[0])


def classify(s_forget: float, s_size: float, s_classes: float) -> str:
    """The rule in RULE; a class-only method is judged on the class sweep, and the size sweep cannot see it."""
    if not math.isfinite(s_forget):
        return "forget set (class sweep)" if s_classes >= 0.5 else "not the forget set (class sweep only)"
    if s_forget >= 0.5:
        return "forget set"
    return "retain set" if s_size >= 0.5 else "neither"


def fit_slopes(points: dict, methods: list[str], sizes_only: bool = False) -> dict[str, dict]:
    """Each method's (and retraining's) log-log slopes over the three sweeps, and what it scales with."""
    rows = {}
    sizes = [k for k in points if k.startswith("size")]
    for name in ["retrain", *methods]:
        s_f, s_c, s_n = (slope([points[k][x] for k in keys if k in points],
                               [points[k]["times"][name] for k in keys if k in points])
                         for keys, x in ((RANDOM_POINTS, "n_forget"), (CLASS_POINTS, "n_forget"), (sizes, "n_train")))
        rows[name] = {"slope_forget_random": s_f, "slope_forget_classes": s_c, "slope_train_size": s_n,
                      "scales_with": "(size sweep only)" if sizes_only else classify(s_f, s_n, s_c)}
    return rows


def measure(params: Params, ds: Dataset, request: dict, methods: list[str], seeds: list[int],
            original=None) -> dict:
    """Oracle and method times (median over seeds) for one request on `ds`; trains a base unless given."""
    split = resolve(RequestConfig(**request), ds)
    if original is None:
        original, _ = train_original(params, split)
    times: dict[str, list[float]] = {"retrain": [], **{m: [] for m in methods}}
    for seed in seeds:
        times["retrain"].append(train_oracle(params, split, seed=seed)[1])
        for name in methods:  # a method that cannot serve the request (unsir: classes only) gets nan
            times[name].append(float("nan") if unsupported_reason(name, split) else
                               run_method(params, name, original, split, seed=seed).time_s)
    return {"n_train": len(ds.y_train), "n_forget": len(split.forget_idx), "n_retain": len(split.retain_idx),
            "times": {k: statistics.median(v) for k, v in times.items()}, "runs": times, "original": original}


def warm_up(params: Params, ds: Dataset, methods: list[str]) -> None:
    small = subset(ds, 400, seed=1)
    split = resolve(RequestConfig(classes=[3]), small)
    base, _ = train_original(params, split)
    for name in methods:
        run_method(params, name, base, split)


def plot(points: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, keys, xkey, title in ((axes[0], RANDOM_POINTS, "n_forget", "random request: time vs |D_f|"),
                                  (axes[1], [k for k in points if k.startswith("size")], "n_train",
                                   "training set: time vs |D| (forget 10 %)")):
        keys = [k for k in keys if k in points]
        if not keys:  # --sizes-only: no request sweep
            ax.axis("off")
            continue
        for name in ["retrain", *methods]:
            xs = [points[k][xkey] for k in keys]
            ys = [points[k]["times"][name] for k in keys]
            ax.plot(xs, ys, "k--o" if name == "retrain" else "-o", label=name, lw=2 if name == "retrain" else 1)
        ax.set(xscale="log", yscale="log", title=title, ylabel="seconds",
               xlabel="|D_f| (samples)" if xkey == "n_forget" else "|D| (samples)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding MNIST/raw/*.gz")
    ap.add_argument("--quick", action="store_true", help="4,000 training images instead of 60,000")
    ap.add_argument("--sizes-only", action="store_true",
                    help="only the size sweep (25, 50, 100 %% of the data, forget 10 %%): the full-MNIST part in "
                         "about 35 minutes on one core, where the whole sweep takes hours")
    ap.add_argument("--sizes-from", default=None, metavar="JSON",
                    help="take the size sweep from an earlier --sizes-only run on the same data and recipe; only the "
                         "request sweep runs (the two halves of a full-MNIST run can then go in two sessions)")
    ap.add_argument("--seeds", type=int, default=1, help="unlearning/oracle seeds per point (median)")
    ap.add_argument("--epochs", type=int, default=3, help="the recipe of the original and the oracle")
    ap.add_argument("--methods", default=None, help="comma-separated (default: unlearn.methods of params.yaml)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "growth.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # a shared 2-core CPU: more threads only add contention
    # The recipe and the method list of params.yaml (adam 1e-3, batch 64), on MNIST with the cnn.
    params = load_params(str(ROOT / "params.yaml"), ["data.name=mnist", "data.root=null", "model.name=cnn",
                                                     "model.width=16", f"train.epochs={args.epochs}", "train.device=cpu"])
    methods = args.methods.split(",") if args.methods else list(params.unlearn.methods)
    seeds = list(range(args.seeds))
    full = subset(load_dataset("mnist", args.data_root), 4000 if args.quick else None)
    t0 = time.perf_counter()
    warm_up(params, full, methods)
    points: dict[str, dict] = {}
    sizes_from = _sizes_from(Path(args.sizes_from), len(full.y_train), args.epochs) if args.sizes_from else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save_partial() -> None:  # what is measured survives a stop (the full sweep takes hours)
        done = {k: {f: v for f, v in p.items() if f != "original"} for k, p in points.items()}
        out.write_text(json.dumps({"partial": True, "n_train": len(full.y_train), "recipe_epochs": args.epochs,
                                   "points": done}, indent=2) + "\n")

    base = None
    for label, request in ({} if args.sizes_only else REQUESTS).items():
        print(f"[{time.perf_counter() - t0:6.0f} s] {label}", flush=True)
        points[label] = measure(params, full, request, methods, seeds, original=base)
        base = points[label]["original"]
        save_partial()
    if sizes_from is not None:
        points.update(sizes_from)
    fractions = (*SIZES, 1.0) if args.sizes_only else SIZES  # without --sizes-only, 100 % is "random 10%"
    for frac in () if sizes_from is not None else fractions:
        label = f"size {frac:.0%}"
        print(f"[{time.perf_counter() - t0:6.0f} s] {label}", flush=True)
        points[label] = measure(params, subset(full, int(frac * len(full.y_train)), seed=2), {"random": 0.1},
                                methods, seeds)
        save_partial()
    if not args.sizes_only and sizes_from is None:
        points["size 100%"] = points["random 10%"]
    for p in points.values():
        p.pop("original", None)
    rows = fit_slopes(points, methods, args.sizes_only)
    png = out.with_suffix(".png")
    plot(points, methods, png)
    result = {"dataset": "mnist", "model": "cnn width 16", "recipe_epochs": args.epochs, "quick": args.quick,
              "sizes_only": args.sizes_only, "sizes_from": args.sizes_from,
              "n_train": len(full.y_train), "seeds": len(seeds), "rule": RULE, "points": points, "slopes": rows,
              "wall_s": time.perf_counter() - t0}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result, methods))
    print(f"JSON: {out}\nplot: {png}")
    return 0


def _sizes_from(path: Path, n_train: int, epochs: int) -> dict[str, dict]:
    """The size points of an earlier `--sizes-only` run, refused unless its data size and recipe match."""
    run = json.loads(path.read_text())
    if not run.get("sizes_only") or run.get("n_train") != n_train or run.get("recipe_epochs") != epochs:
        raise SystemExit(f"{path}: not a --sizes-only run on {n_train} training images with a {epochs}-epoch "
                         "recipe; not used")
    return {k: p for k, p in run["points"].items() if k.startswith("size")}


def report(result: dict, methods: list[str]) -> str:
    pts = result["points"]
    lines = [f"# MNIST ({result['n_train']} train), cnn width 16, {result['recipe_epochs']}-epoch recipe, "
             f"{result['seeds']} seed(s); time / retrain time at each point (retrain in seconds)"]
    if any("retrain_of" in p for p in pts.values()):
        lines.append("# joined runs (growth_join.py): each ratio against the retrain of the run that timed that "
                     "method; the retrain column is the first run's")
    head = f"{'point':<12}{'|D|':>7}{'|D_f|':>7}{'retrain s':>10}" + "".join(f"{m[:11]:>12}" for m in methods)
    lines += [head, "-" * len(head)]
    for label, p in pts.items():
        r = p["times"]["retrain"]
        own = p.get("retrain_of", {})  # a joined result (growth_join.py): each method against its own run's retrain
        lines.append(f"{label:<12}{p['n_train']:>7}{p['n_forget']:>7}{r:>10.1f}"
                     + "".join(f"{p['times'][m] / own.get(m, r):>12.3f}" if math.isfinite(p["times"][m])
                               else f"{'-':>12}" for m in methods))
    lines += ["", f"{'method':<14}{'slope |D_f| rand':>17}{'slope |D_f| cls':>16}{'slope |D|':>10}  scales with",
              "-" * 72]
    for name, s in result["slopes"].items():
        f = [s["slope_forget_random"], s["slope_forget_classes"], s["slope_train_size"]]
        lines.append(f"{name:<14}{f[0]:>17.2f}{f[1]:>16.2f}{f[2]:>10.2f}  {s['scales_with']}")
    lines.append(f"rule: {result['rule']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
