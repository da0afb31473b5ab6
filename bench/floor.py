"""How close can a method get at all? Its floor over a grid of settings, scored against the retrained oracle.

A calibrated row answers "what does the search find on proxy requests"; this answers the question behind it:
is there any setting on the grid that comes near the oracle on the live request? Every grid point runs on the
same base models (one per training seed) and is scored against the same oracles; the best point of each
seed is **picked with the oracle**, so it is a floor to explain a method's limit, never a setting to use
(choosing it would tune on the live request's forget set).

    .venv/bin/python bench/floor.py --data mnist --data-root ../shared/datasets --model cnn --width 16 \
        --epochs 5 --seeds 0,1 --method ssd --grid selection_weighting=2.5,3,4,4.5,5,10 \
        --grid dampening_constant=0.01,1 --out bench/results/floor-mnist-cnn-5ep-ssd.json

Grids are cartesian products of `--grid KEY=V1,V2,...` (values parsed as YAML scalars: numbers, booleans,
strings; '1e-3' is a number). Prints one row per (seed, point) as it goes, then the best point per seed and the point with the
lowest mean gap over seeds; writes JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.frontier import FIELDS, SCENARIOS  # noqa: E402
from unlearning.params import load_params  # noqa: E402
from unlearning.steps import (  # noqa: E402
    evaluate_model,
    load_split,
    run_method,
    train_oracle,
    train_original,
    with_training_seed,
)

KEYS = {k: metric for k, metric in FIELDS.items() if k != "speedup"}  # frontier's point fields, no timing axis


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = recipe_parser(__doc__)
    ap.add_argument("--scenario", default="class 3", choices=sorted(SCENARIOS))
    ap.add_argument("--method", required=True)
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="repeatable")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override")
    ap.add_argument("--out", required=True, help="JSON path (a PNG is written beside it)")
    args = ap.parse_args(argv)
    if not args.grid:
        ap.error("give at least one --grid KEY=V1,V2,...")
    return args


def recipe_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the arguments that pick the data, model, recipe and training seeds of a bench run."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-root", default=None, help="folder with the torchvision layout (MNIST/raw/*.gz)")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--width", type=int, default=0, help="0: the model's own width")
    ap.add_argument("--epochs", type=int, required=True, help="the training recipe's epochs")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    return ap


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """Params overrides for one data set, model and recipe on the CPU, without AIN or a calibration profile."""
    return [f"data.name={args.data}", f"model.name={args.model}", f"train.epochs={args.epochs}",
            "train.device=cpu", "evaluate.device=cpu", "evaluate.ain=false", "calibration.use_profile=false",
            *([f"data.root={args.data_root}"] if args.data_root else []),
            *([f"model.width={args.width}"] if args.width else [])]


def grid_points(specs: list[str]) -> list[dict[str, Any]]:
    """The cartesian product of `KEY=V1,V2,...` specs, each value a YAML scalar."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"--grid {spec!r}: expected KEY=V1,V2,...")
        axes.append([(key, _scalar(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _scalar(text: str) -> Any:
    """A number where the text is one (YAML 1.1 reads '1e-3' as a string), else YAML's reading."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)  # a shared CPU: more threads only add contention
    base = [*recipe_overrides(args), SCENARIOS[args.scenario], *args.set]
    points = grid_points(args.grid)
    # Validate every point's config before any training: a typo fails in a second, not after an hour.
    point_params = [load_params(str(ROOT / "params.yaml"), [*base, f"unlearn.{args.method}={json.dumps(pt)}"])
                    for pt in points]
    for p in point_params:
        p.unlearn.method_config(args.method)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"data": args.data, "model": args.model, "width": args.width, "epochs": args.epochs,
                              "scenario": args.scenario, "method": args.method, "grid": args.grid,
                              "overrides": args.set, "points": points, "runs": {}}
    split = load_split(point_params[0])
    t0, done, total = time.perf_counter(), 0, len(seeds) * len(points)
    for seed in seeds:
        p0 = with_training_seed(point_params[0], seed)
        original, _ = train_original(p0, split)
        oracle, _ = train_oracle(p0, split)
        ref = evaluate_model(p0, oracle, split, original=original, oracle=oracle)
        rows = []
        for pt, params in zip(points, point_params, strict=True):
            res = run_method(params, args.method, original, split)
            m = evaluate_model(params, res.model, split, original=original, oracle=oracle)
            rows.append({"point": pt, **{k: m.get(v, float("nan")) for k, v in KEYS.items()}, "time_s": res.time_s})
            done += 1
            eta = (time.perf_counter() - t0) / done * (total - done)
            print(f"[{time.perf_counter() - t0:6.0f} s, ETA {eta:5.0f} s] seed {seed} {_row(rows[-1])}", flush=True)
        result["runs"][str(seed)] = {"oracle": {k: ref.get(v, float("nan")) for k, v in KEYS.items() if k != "gap"},
                                     "rows": rows}
        out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive a stop
    summarise(result)
    result["wall_s"] = time.perf_counter() - t0
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"JSON: {out}\nplot: {out.with_suffix('.png')}\nwall: {result['wall_s']:.0f} s")
    return 0


def _row(r: dict[str, Any]) -> str:
    return (f"{json.dumps(r['point'])}: forget {r['forget']:.3f} retain {r['retain']:.3f} test {r['test']:.3f} "
            f"mia {r['mia']:.3f} gap {r['gap']:.2f}")


def summarise(result: dict[str, Any]) -> None:
    """The oracle-picked best point per seed and the point with the lowest mean gap, printed and stored."""
    best = {}
    for seed, run in result["runs"].items():
        row = min(run["rows"], key=lambda r: r["gap"])
        best[seed] = row
        print(f"seed {seed}: oracle forget {run['oracle']['forget']:.3f} retain {run['oracle']['retain']:.3f} "
              f"test {run['oracle']['test']:.3f}; best (picked with the oracle) {_row(row)}")
    means = [sum(run["rows"][i]["gap"] for run in result["runs"].values()) / len(result["runs"])
             for i in range(len(result["points"]))]
    i = min(range(len(means)), key=means.__getitem__)
    print(f"lowest mean gap over seeds: {json.dumps(result['points'][i])} at {means[i]:.2f}")
    result["best_per_seed"], result["mean_gap"] = best, means


def plot(result: dict[str, Any], path: Path) -> None:
    """Gap per grid point, one line per seed, the 2-point line of issue #12 for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    varied = [k for k in pts[0] if len({json.dumps(pt[k]) for pt in pts}) > 1]  # constants go in the title
    fixed = ", ".join(f"{k} {v}" for k, v in pts[0].items() if k not in varied)
    labels = [", ".join(f"{k} {pt[k]}" for k in varied) or "the one point" for pt in pts]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels)), 4.5))
    for seed, run in result["runs"].items():
        ax.plot(range(len(run["rows"])), [max(r["gap"], 0.05) for r in run["rows"]], "o-", label=f"seed {seed}")
    ax.axhline(2.0, color="grey", ls=":", label="2 points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(varied) < 2 else 60, ha="right", fontsize=7)
    ax.set_ylabel("average gap to the oracle (points)")
    ax.set_title(f"{result['method']} on {result['data']} {result['model']}, {result['scenario']}: "
                 f"every grid point{'; ' + fixed if fixed else ''}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
