"""Join `bench/growth.py` request sweeps of disjoint method sets into one table, slopes and plot.

On all of MNIST a request sweep of every method takes hours at one thread, so it runs as several
`growth.py --methods ... --sizes-from ...` runs (in parallel or in other sessions). Each run retrains at
every point; here each method keeps the retrain time of its own run (`retrain_of`), so every ratio is
still measured in one run. Slopes are fitted on each method's own times (retraining's: the first run's).
The runs must share the training-set size, the recipe and the size sweep (the same `--sizes-from`).

    .venv/bin/python bench/growth_join.py bench/results/growth-mnist.json A.json B.json \\
        --out bench/results/growth-mnist-all.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from growth import fit_slopes, plot, report  # noqa: E402

SHARED = ("n_train", "recipe_epochs", "sizes_from", "seeds", "quick")


def methods_of(run: dict) -> list[str]:
    return [m for m in run["slopes"] if m != "retrain"]


def join(runs: list[dict]) -> dict:
    """One result from several complete request sweeps; refused when they do not describe the same sweep."""
    first = runs[0]
    for run in runs:
        if run.get("partial") or run.get("sizes_only"):
            raise SystemExit("growth_join: only complete request sweeps can be joined (a run is partial or "
                             "--sizes-only)")
        differs = [k for k in SHARED if run.get(k) != first.get(k)]
        if differs:
            raise SystemExit(f"growth_join: the runs differ in {differs}: not the same sweep")
    points = copy.deepcopy(first["points"])
    methods = methods_of(first)
    for p in points.values():
        p["retrain_of"] = {m: p["times"]["retrain"] for m in methods}
    for run in runs[1:]:
        new = methods_of(run)
        if set(new) & set(methods):
            raise SystemExit(f"growth_join: {sorted(set(new) & set(methods))} timed in two runs")
        if set(run["points"]) != set(points):
            raise SystemExit("growth_join: the runs have different points")
        for label, p in run["points"].items():
            if label.startswith("size"):  # the same --sizes-from file: already holds every method it timed
                continue
            points[label]["times"].update({m: p["times"][m] for m in new})
            points[label]["runs"].update({m: p["runs"][m] for m in new})
            points[label]["retrain_of"].update({m: p["times"]["retrain"] for m in new})
        methods += new
    return {**{k: first[k] for k in ("dataset", "model", "recipe_epochs", "quick", "sizes_only", "sizes_from",
                                     "n_train", "seeds", "rule")},
            "joined_from": [r.get("source") for r in runs], "points": points,
            "slopes": fit_slopes(points, methods), "wall_s": sum(r["wall_s"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="growth.py JSON results (request sweeps of disjoint method sets)")
    ap.add_argument("--out", required=True, help="joined JSON (a PNG beside it)")
    args = ap.parse_args(argv)
    runs = []
    for path in args.runs:
        run = json.loads(Path(path).read_text())
        run["source"] = path
        runs.append(run)
    result = join(runs)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    methods = [m for m in result["slopes"] if m != "retrain"]
    plot(result["points"], methods, out.with_suffix(".png"))
    print(report(result, methods))
    print(f"JSON: {out}\nplot: {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
