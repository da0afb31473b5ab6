"""Quality against speed (issue #15, item 1): every method at its default and calibrated settings, on a
converged recipe, as average gap to the retrained model against speedup over retraining, with the Pareto front.

For one dataset and model:
1. **Converged recipe.** Unless `--epochs N` is given, a whole recipe of each `--recipes` length is trained
   and scored on the test set; the recipe is the shortest within `--tolerance` points of the best. Base
   models and oracles then use it.
2. **Default settings.** `python -m unlearning`'s experiment (`run_experiment`) per scenario (class 3, random
   10 %): a base model and an oracle per training seed (`--seeds`), every method on each base, with calibration
   profiles switched off. Average gap (`oracle/avg_gap`, points) and speedup (oracle time of the same seed /
   method time, measured in the same run) come with 95 % t intervals over the seeds.
3. **Calibrated settings.** `unlearning.calibration.calibrate` on proxy requests of the scenario's kind (never
   the live request), its profile written to a scratch folder, then the same experiment with that profile,
   on the bases and oracles the default experiment trained (one speedup reference for both settings).
   The calibration's wall time per method is reported beside it.
4. A point (method, settings) is on the Pareto front when no other point has a lower-or-equal gap and a
   higher-or-equal speedup, one of them strictly. Prints a table, writes JSON and a PNG beside it.

    nice -n 10 .venv/bin/python bench/frontier.py --data mnist --data-root ../shared/datasets --model cnn --width 16
    .venv/bin/python bench/frontier.py --quick     # digits mlp, 20 epochs, small calibration budget: minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.frontier_report import finite, is_noop, metrics_table, plot, read_alike, table  # noqa: E402
from unlearning.calibration.core import calibrate  # noqa: E402
from unlearning.calibration.profile import data_version  # noqa: E402
from unlearning.metrics import accuracy  # noqa: E402
from unlearning.params import Params, load_params  # noqa: E402
from unlearning.runner.experiment import run_experiment, stage_count  # noqa: E402
from unlearning.steps import build_model, load_split, train_recipe  # noqa: E402
from unlearning.training import predict  # noqa: E402

SCENARIOS = {"class 3": "request.classes=[3]", "random 10%": "request.random=0.1"}
GAP, SPEEDUP = "oracle/avg_gap", "speedup"
FIELDS = {"gap": GAP, "speedup": SPEEDUP, "forget": "forget/acc", "retain": "retain/acc", "test": "test/acc",
          "mia": "mia/efficacy"}  # point field -> the experiment's metric; each gets `<field>_ci` too


def converged_epochs(params: Params, candidates: list[int], tolerance: float) -> tuple[int, dict[int, float]]:
    """The shortest recipe within `tolerance` points of the best test accuracy among whole recipes of each
    candidate length. Whole recipes, not the epochs of one long run: under a one-cycle schedule the middle of
    a long run is at a high learning rate and says nothing about a short recipe's end point."""
    split = load_split(params)
    test = split.test()
    curve: dict[int, float] = {}
    for epochs in candidates:
        t0 = time.perf_counter()
        model = build_model(params, split.dataset)
        cfg = params.train.model_copy(update={"epochs": epochs})
        train_recipe(model, split.train(), cfg, num_classes=split.dataset.num_classes)
        curve[epochs] = 100.0 * accuracy(predict(model, test), test.y)
        print(f"  {epochs:>3}-epoch recipe: test acc {curve[epochs]:.2f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    best = max(curve.values())
    return next(e for e in candidates if curve[e] >= best - tolerance), curve


def fields_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A model entry's means and 95 % intervals under the point's field names (`FIELDS`)."""
    ci = entry.get("ci", {})
    out: dict[str, Any] = {}
    for field, key in FIELDS.items():
        out[field], out[f"{field}_ci"] = entry.get(key), ci.get(key)
    return out


def points_of(results: dict[str, Any], settings: str) -> dict[str, dict[str, Any]]:
    """(method, settings) -> every field's mean with its interval, from one experiment's results."""
    out = {}
    for name, entry in results["methods"].items():
        if "skipped" in entry:
            continue
        out[f"{name} ({settings})"] = {
            "method": name, "settings": settings, **fields_of(entry), "n_seeds": entry.get("n_seeds"),
            "values": entry.get("settings") if settings == "calibrated" else None}
    return out


def pareto(points: dict[str, dict[str, Any]], original: dict[str, Any] | None = None) -> list[str]:
    """Names of the points no other point dominates (gap lower-or-equal, speedup higher-or-equal, one strictly);
    no-op settings (`is_noop`) are left out."""
    ok = {k: p for k, p in points.items() if finite(p["gap"]) and finite(p["speedup"]) and not is_noop(p, original)}

    def dominated(p: dict[str, Any]) -> bool:
        return any(q["gap"] <= p["gap"] and q["speedup"] >= p["speedup"]
                   and (q["gap"] < p["gap"] or q["speedup"] > p["speedup"]) for q in ok.values())

    return sorted((k for k, p in ok.items() if not dominated(p)), key=lambda k: ok[k]["speedup"])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-root", default=None, help="folder with the torchvision layout (MNIST/raw/*.gz)")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=int, default=16, help="16: MNIST's reference; 0: the model's own (digits)")
    ap.add_argument("--epochs", type=int, default=None, help="fixed recipe epochs (default: find convergence)")
    ap.add_argument("--recipes", default="3,5,8", help="recipe lengths (epochs) tried for convergence")
    ap.add_argument("--tolerance", type=float, default=0.2, help="points below the best test accuracy")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (a base and an oracle each)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: unlearn.methods of params.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override for every run (train.mnemonic={t_mix: 0.1} for mnemonic); repeatable")
    ap.add_argument("--trials", type=int, default=20, help="calibration trials per method")
    ap.add_argument("--budget-s", type=float, default=300.0, help="calibration wall time per method")
    ap.add_argument("--no-calibrate", action="store_true", help="default settings only")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS).replace("%", "%%"))
    ap.add_argument("--quick", action="store_true", help="digits mlp, 20 epochs, 6 trials / 60 s per method")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/frontier-<data>-<model>.json)")
    ap.add_argument("--calibration-from", default=None, metavar="JSON",
                    help="apply an earlier run's calibration outcomes (same data, model, recipe, seeds) instead of "
                         "searching again; its default points are kept, only the methods it retuned run again")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine the scenarios of runs made in parallel (same data, model, recipe) into --out")
    args = ap.parse_args(argv)
    if args.quick:
        args.data, args.model, args.width, args.epochs = "digits", "mlp", None, args.epochs or 20
        args.trials, args.budget_s = min(args.trials, 6), min(args.budget_s, 60.0)
    bad = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.merge:
        return merge([Path(p) for p in args.merge], Path(args.out or args.merge[0]))
    torch.set_num_threads(1)  # a shared 2-core CPU: more threads only add contention
    base = [f"data.name={args.data}", "train.device=cpu", "evaluate.device=cpu", f"model.name={args.model}",
            f"evaluate.training_seeds={list(range(args.seeds))}", "evaluate.seeds=[0]", "evaluate.more_seeds=[]",
            "evaluate.ain=false"]  # AIN (relearning, the costliest metric) is not on either axis
    base += [f"data.root={args.data_root}"] if args.data_root else []
    base += ([f"model.width={args.width}"] if args.width else []) + args.set
    params = load_params(str(ROOT / "params.yaml"), base)
    methods = args.methods.split(",") if args.methods else list(params.unlearn.methods)
    t0 = time.perf_counter()
    curve: dict[int, float] = {}
    epochs = args.epochs
    if epochs is None:
        print(f"finding the converged recipe (whole recipes of {args.recipes} epochs) ...", flush=True)
        epochs, curve = converged_epochs(params, [int(e) for e in args.recipes.split(",")], args.tolerance)
        print(f"converged recipe: {epochs} epochs (best test acc {max(curve.values()):.2f})", flush=True)
    base += [f"train.epochs={epochs}", f"unlearn.methods={methods}",
             f"calibration.trials={args.trials}", f"calibration.budget_s={args.budget_s}"]
    model = args.model + (f" width {args.width}" if args.width else "")
    result: dict[str, Any] = {"dataset": args.data, "model": model, "epochs": epochs, "recipe_test_acc": curve,
                              "seeds": args.seeds, "methods": methods, "overrides": args.set, "scenarios": {}}
    out = Path(args.out or ROOT / "bench" / "results" / f"frontier-{args.data}-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for scenario in args.scenarios.split(","):
        def save(res: dict[str, Any], scenario: str = scenario) -> None:  # partial results survive a stop
            result["scenarios"][scenario] = res
            out.write_text(json.dumps(result, indent=2, default=str) + "\n")

        if args.calibration_from:
            replay(base, scenario, args, t0, save, result)
        else:
            _scenario(base, scenario, args, t0, save)
    result["wall_s"] = time.perf_counter() - t0
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result, out)
    return 0


def report(result: dict[str, Any], out: Path) -> None:
    """Both tables of every scenario, printed, and the plot beside the JSON."""
    png = out.with_suffix(".png")
    plot(result, png)
    print(f"\n# {result['dataset']} {result['model']}, {result['epochs']}-epoch recipe, {result['seeds']} "
          "training seeds; mean ± 95 % t half-width over seeds\n")
    print("\n\n".join(f"{table(s, res)}\n\n{metrics_table(s, res)}" for s, res in result["scenarios"].items()))
    print(f"\nJSON: {out}\nplot: {png}\nwall: {result.get('wall_s', float('nan')):.0f} s")


def merge(paths: list[Path], out: Path) -> int:
    """One result from runs of other scenarios made side by side (`--scenarios` per process); their recipe,
    data and model must agree. Wall time is the longest run's (they ran at once)."""
    runs = read_alike(paths, ("dataset", "model", "epochs", "seeds", "overrides"))
    first = runs[0]
    merged = {**first, "scenarios": {s: r for run in runs for s, r in run["scenarios"].items()},
              "methods": list(dict.fromkeys(m for run in runs for m in run["methods"])),
              "recipe_test_acc": next((run["recipe_test_acc"] for run in runs if run.get("recipe_test_acc")), {}),
              "wall_s": max(run.get("wall_s", float("nan")) for run in runs), "merged_from": [str(p) for p in paths]}
    out.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    report(merged, out)
    return 0


def replay(base: list[str], scenario: str, args: argparse.Namespace, t0: float,
           save: Callable[[dict[str, Any]], None], result: dict[str, Any]) -> None:
    """The calibrated half of a scenario from an earlier run's recorded calibration (`--calibration-from`): the
    methods whose search changed a setting run again with those values (bases and oracles retrained with the
    same seeds; `original_check` compares the untouched originals of both runs, so a reader can see they are
    the same models); a method that kept its defaults gets its default point, marked `same_as_default`.
    Speedups of rerun methods are against this run's oracle time (`oracle_s_replay`)."""
    path = Path(args.calibration_from)
    old = json.loads(path.read_text())
    for key in ("dataset", "model", "epochs", "seeds", "overrides"):  # older files have no overrides
        if old.get(key, []) != result[key]:
            raise SystemExit(f"{path}: {key} {old.get(key)!r} differs from this run's {result[key]!r}; not replayed")
    prev = old["scenarios"][scenario]
    chosen = {m: c for m, c in prev["calibration"].items() if m in result["methods"]}
    retuned = [m for m, c in chosen.items() if c["chosen"] != "defaults"]
    points = {k: p for k, p in prev["points"].items() if p["settings"] == "default"}
    for m in set(chosen) - set(retuned):
        points[f"{m} (calibrated)"] = {**points[f"{m} (default)"], "settings": "calibrated",
                                       "values": chosen[m]["values"], "same_as_default": True}
    res = {**prev, "points": points, "calibration": chosen, "replayed_from": str(path)}
    if retuned:
        sets = [f"unlearn.{m}={json.dumps(chosen[m]['values'])}" for m in retuned]
        params = load_params(str(ROOT / "params.yaml"), [*base, SCENARIOS[scenario], "calibration.use_profile=false",
                                                          f"unlearn.methods={retuned}", *sets])
        print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: calibrated settings of {', '.join(retuned)} "
              f"from {path.name}", flush=True)
        tuned = run_experiment(params, on_step=_progress(params, f"{scenario}, calibrated", t0))
        points.update(points_of(tuned, "calibrated"))
        now = fields_of(tuned["original"])
        res["original_check"] = {f: [prev["original"][f], now[f]] for f in ("forget", "retain", "test", "gap")}
        res["oracle_s_replay"] = tuned["oracle"].get("time/s")
    res["front"] = pareto(points, prev["original"])
    save(res)


def _progress(params: Params, label: str, t0: float) -> Callable[[], None]:
    """An `on_step` that prints units done of `stage_count` and a linear ETA: MNIST runs take an hour."""
    total, done, start = stage_count(params), [0], time.perf_counter()

    def step() -> None:
        done[0] += 1
        eta = (time.perf_counter() - start) / done[0] * (total - done[0])
        print(f"[{time.perf_counter() - t0:6.0f} s] {label}: {done[0]}/{total} models, ETA {eta:.0f} s", flush=True)

    return step


def _scenario(base: list[str], scenario: str, args: argparse.Namespace, t0: float,
              save: Callable[[dict[str, Any]], None]) -> None:
    """Default and calibrated experiments of one scenario, on the same bases and oracles (trained once, so
    both share the speedup reference); `save` gets the result after each part: the default settings, the
    calibration's outcome, then the whole."""
    overrides = [*base, SCENARIOS[scenario]]
    print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: default settings", flush=True)
    default_params = load_params(str(ROOT / "params.yaml"), [*overrides, "calibration.use_profile=false"])
    trained: dict[int, tuple[Any, ...]] = {}
    default = run_experiment(default_params, on_step=_progress(default_params, f"{scenario}, default", t0),
                             trained=trained)
    points = points_of(default, "default")
    oracle_s = default["oracle"]["time/s"] if "time/s" in default.get("oracle", {}) else float("nan")
    original = fields_of(default["original"])
    calib_s: dict[str, float] = {}
    chosen: dict[str, Any] = {}

    def res() -> dict[str, Any]:
        return {"points": points, "front": pareto(points, original), "oracle_s": oracle_s,
                "calibration_s": calib_s, "original": original, "original_gap": original["gap"],
                "original_gap_ci": original["gap_ci"], "calibration": chosen}

    save(res())
    if not args.no_calibrate:
        with tempfile.TemporaryDirectory() as scratch:
            cal_params = load_params(str(ROOT / "params.yaml"), [*overrides, f"calibration.profile_dir={scratch}"])
            split = load_split(cal_params)
            print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: calibrating on proxies", flush=True)
            cal = calibrate(cal_params, split, data_version=data_version(split))
            calib_s = {m: s.wall_s for m, s in cal.searches.items()}
            chosen = {m: {"chosen": s.chosen, "values": s.values, "trials": s.trials, "budget_hint": s.budget_hint,
                          **{f"heldout_{k}": cal.heldout.get(m, {}).get(k) for k in ("gap", "default_gap", "vetoed_gap")}}
                      for m, s in cal.searches.items()}
            save(res())  # the calibration's outcome survives a stop during the (long) calibrated experiment
            print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: calibrated settings", flush=True)
            tuned = run_experiment(cal_params, on_step=_progress(cal_params, f"{scenario}, calibrated", t0),
                                   trained=trained)
            points.update(points_of(tuned, "calibrated"))
    save(res())


if __name__ == "__main__":
    sys.exit(main())
