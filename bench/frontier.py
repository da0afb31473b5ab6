"""Quality against speed (issue #15, item 1): every method at its default and calibrated settings, on a
converged recipe, as average gap to the retrained model against speedup over retraining, with the Pareto front.

For one dataset and model:
1. **Converged recipe.** Unless `--epochs N` is given, the original model is trained for up to
   `--max-epochs`, scoring the test set after every epoch; the recipe's epochs are the first epoch whose test
   accuracy is within `--tolerance` points of the best seen. Base models and oracles then use that recipe.
2. **Default settings.** `python -m unlearning`'s experiment (`run_experiment`) per scenario (class 3, random
   10 %): a base model and an oracle per training seed (`--seeds`), every method on each base, with calibration
   profiles switched off. Average gap (`oracle/avg_gap`, points) and speedup (oracle time of the same seed /
   method time, measured in the same run) come with 95 % t intervals over the seeds.
3. **Calibrated settings.** `unlearning.calibration.calibrate` on proxy requests of the scenario's kind (never
   the live request), its profile written to a scratch folder, then the same experiment with that profile.
   The calibration's wall time per method is reported beside it.
4. A point (method, settings) is on the Pareto front when no other point has a lower-or-equal gap and a
   higher-or-equal speedup, one of them strictly. Prints a table, writes JSON and a PNG beside it.

    nice -n 10 .venv/bin/python bench/frontier.py --data mnist --data-root ../shared/datasets --model cnn --width 16
    .venv/bin/python bench/frontier.py --quick     # digits mlp, 20 epochs, small calibration budget: minutes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unlearning.calibration.core import calibrate  # noqa: E402
from unlearning.calibration.profile import data_version  # noqa: E402
from unlearning.metrics import accuracy  # noqa: E402
from unlearning.params import Params, load_params  # noqa: E402
from unlearning.runner.experiment import run_experiment  # noqa: E402
from unlearning.steps import build_model, load_split, train_recipe  # noqa: E402
from unlearning.training import predict  # noqa: E402

SCENARIOS = {"class 3": "request.classes=[3]", "random 10%": "request.random=0.1"}
GAP, SPEEDUP = "oracle/avg_gap", "speedup"


def converged_epochs(params: Params, max_epochs: int, tolerance: float) -> tuple[int, list[float]]:
    """The first epoch within `tolerance` points of the best test accuracy of one `max_epochs` run."""
    split = load_split(params)
    model = build_model(params, split.dataset)
    test = split.test()
    curve: list[float] = []

    def after_epoch(event: dict[str, Any]) -> None:
        if "epoch" in event:  # the model is between epochs: score it, `fit` puts it back in train mode
            curve.append(100.0 * accuracy(predict(model, test), test.y))
            print(f"  epoch {event['epoch']:>3}/{max_epochs}: test acc {curve[-1]:.2f}", flush=True)

    cfg = params.train.model_copy(update={"epochs": max_epochs})
    train_recipe(model, split.train(), cfg, num_classes=split.dataset.num_classes, log=after_epoch)
    best = max(curve)
    return next(i + 1 for i, acc in enumerate(curve) if acc >= best - tolerance), curve


def points_of(results: dict[str, Any], settings: str) -> dict[str, dict[str, Any]]:
    """(method, settings) -> gap and speedup means with their intervals, from one experiment's results."""
    out = {}
    for name, entry in results["methods"].items():
        if "skipped" in entry:
            continue
        ci = entry.get("ci", {})
        out[f"{name} ({settings})"] = {
            "method": name, "settings": settings, "gap": entry.get(GAP), "gap_ci": ci.get(GAP),
            "speedup": entry.get(SPEEDUP), "speedup_ci": ci.get(SPEEDUP), "n_seeds": entry.get("n_seeds"),
            "forget": entry.get("forget/acc"), "retain": entry.get("retain/acc"), "test": entry.get("test/acc"),
            "values": entry.get("settings") if settings == "calibrated" else None}
    return out


def is_noop(p: dict[str, Any], original: dict[str, Any] | None) -> bool:
    """A setting that left the model as it was: gap, forget and retain accuracy all equal the untouched
    original's (to 0.005 points and 0.0005). Calibration on random requests can choose such settings, since
    doing nothing is already close to the oracle there; such a point is not an unlearner and is off the front."""
    if not original:
        return False
    return all(_finite(p[k]) and _finite(original.get(k)) and abs(p[k] - original[k]) <= tol
               for k, tol in (("gap", 0.005), ("forget", 0.0005), ("retain", 0.0005)))


def pareto(points: dict[str, dict[str, Any]], original: dict[str, Any] | None = None) -> list[str]:
    """Names of the points no other point dominates (gap lower-or-equal, speedup higher-or-equal, one strictly);
    no-op settings (`is_noop`) are left out."""
    ok = {k: p for k, p in points.items() if _finite(p["gap"]) and _finite(p["speedup"]) and not is_noop(p, original)}

    def dominated(p: dict[str, Any]) -> bool:
        return any(q["gap"] <= p["gap"] and q["speedup"] >= p["speedup"]
                   and (q["gap"] < p["gap"] or q["speedup"] > p["speedup"]) for q in ok.values())

    return sorted((k for k, p in ok.items() if not dominated(p)), key=lambda k: ok[k]["speedup"])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _pm(mean: Any, ci: Any, digits: int) -> str:
    if not _finite(mean):
        return "-"
    half = (ci[1] - ci[0]) / 2 if ci and all(_finite(c) for c in ci) else float("nan")
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def table(scenario: str, res: dict[str, Any]) -> str:
    points, front, calib_s = res["points"], res["front"], res["calibration_s"]
    head = f"{'method (settings)':<30}{'avg gap (pts)':>16}{'speedup (x)':>16}{'forget':>8}{'retain':>8}{'calib s':>9}"
    lines = [f"## {scenario}: retrain {res['oracle_s']:.1f} s per model (mean); the original model, untouched, "
             f"is at {_pm(res['original_gap'], res['original_gap_ci'], 2)} points",
             "(* on the Pareto front; = the same model as the untouched original: a no-op setting, off the front)",
             head, "-" * len(head)]
    for key, p in sorted(points.items(), key=lambda kv: (kv[1]["gap"] if _finite(kv[1]["gap"]) else 1e9)):
        cal = calib_s.get(p["method"]) if p["settings"] == "calibrated" else None
        mark = "* " if key in front else "= " if is_noop(p, res.get("original")) else "  "
        lines.append(f"{mark + key:<30}{_pm(p['gap'], p['gap_ci'], 2):>16}"
                     f"{_pm(p['speedup'], p['speedup_ci'], 1):>16}{_pm(p['forget'], None, 3):>8}"
                     f"{_pm(p['retain'], None, 3):>8}{(f'{cal:.0f}' if cal is not None else ''):>9}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    colours = dict(zip(result["methods"], plt.cm.tab10.colors * 3, strict=False))  # one colour per method
    floor = 0.05  # a log axis: gaps (and interval ends) below this are drawn at it
    fig, axes = plt.subplots(1, len(scenarios), figsize=(7 * len(scenarios), 5.5), squeeze=False)
    for ax, (scenario, res) in zip(axes[0], scenarios.items(), strict=True):
        pts = res["points"]
        for p in pts.values():
            if not (_finite(p["gap"]) and _finite(p["speedup"])):
                continue
            y = max(p["gap"], floor)
            xerr = [[p["speedup"] - p["speedup_ci"][0]], [p["speedup_ci"][1] - p["speedup"]]] \
                if p["speedup_ci"] else None
            yerr = [[y - max(p["gap_ci"][0], floor)], [max(p["gap_ci"][1], floor) - y]] if p["gap_ci"] else None
            filled = p["settings"] == "calibrated"
            ax.errorbar(max(p["speedup"], 1e-3), y, xerr=xerr, yerr=yerr, fmt="o", ms=7, capsize=2, alpha=0.8,
                        color=colours.get(p["method"]), mfc=colours.get(p["method"]) if filled else "white")
            ax.annotate(p["method"] + ("*" if filled else ""), (p["speedup"], y), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        front = [pts[k] for k in res["front"]]
        ax.step([p["speedup"] for p in front], [max(p["gap"], floor) for p in front], where="post", color="k",
                lw=1, ls="--", label="Pareto front")
        if _finite(res.get("original_gap")):
            ax.axhline(max(res["original_gap"], floor), color="grey", ls=":", lw=1.5,
                       label=f"original, no unlearning ({res['original_gap']:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="speedup over retraining (x, log)",
               ylabel="average gap to the oracle (points, log)",
               title=f"{result['dataset']} {result['model']}, {result['epochs']} epochs: {scenario}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left", title="hollow: default, filled/*: calibrated", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-root", default=None, help="folder with the torchvision layout (MNIST/raw/*.gz)")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=int, default=16, help="0: the model's own default width")
    ap.add_argument("--epochs", type=int, default=None, help="fixed recipe epochs (default: find convergence)")
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--tolerance", type=float, default=0.2, help="points below the best test accuracy")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (a base and an oracle each)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: unlearn.methods of params.yaml)")
    ap.add_argument("--trials", type=int, default=20, help="calibration trials per method")
    ap.add_argument("--budget-s", type=float, default=300.0, help="calibration wall time per method")
    ap.add_argument("--no-calibrate", action="store_true", help="default settings only")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS).replace("%", "%%"))
    ap.add_argument("--quick", action="store_true", help="digits mlp, 20 epochs, 6 trials / 60 s per method")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/frontier-<data>-<model>.json)")
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
    torch.set_num_threads(1)  # a shared 2-core CPU: more threads only add contention
    base = [f"data.name={args.data}", "train.device=cpu", "evaluate.device=cpu", f"model.name={args.model}",
            f"evaluate.training_seeds={list(range(args.seeds))}", "evaluate.seeds=[0]", "evaluate.more_seeds=[]",
            "evaluate.ain=false"]  # AIN (relearning, the costliest metric) is not on either axis
    base += [f"data.root={args.data_root}"] if args.data_root else []
    base += [f"model.width={args.width}"] if args.width else []
    params = load_params(str(ROOT / "params.yaml"), base)
    methods = args.methods.split(",") if args.methods else list(params.unlearn.methods)
    t0 = time.perf_counter()
    curve: list[float] = []
    epochs = args.epochs
    if epochs is None:
        print(f"finding the converged recipe (up to {args.max_epochs} epochs) ...", flush=True)
        epochs, curve = converged_epochs(params, args.max_epochs, args.tolerance)
        print(f"converged recipe: {epochs} epochs (best test acc {max(curve):.2f})", flush=True)
    base += [f"train.epochs={epochs}", f"unlearn.methods={methods}",
             f"calibration.trials={args.trials}", f"calibration.budget_s={args.budget_s}"]
    result: dict[str, Any] = {"dataset": args.data, "model": f"{args.model}" + (f" width {args.width}" if args.width
                                                                                 else ""),
                              "epochs": epochs, "epoch_curve": curve, "seeds": args.seeds, "methods": methods,
                              "scenarios": {}}
    out = Path(args.out or ROOT / "bench" / "results" / f"frontier-{args.data}-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    texts = []
    for scenario in args.scenarios.split(","):
        res = _scenario(base, scenario, args, t0)
        result["scenarios"][scenario] = res
        texts.append(table(scenario, res))
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")  # partial results survive a stop
    result["wall_s"] = time.perf_counter() - t0
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    png = out.with_suffix(".png")
    plot(result, png)
    print(f"\n# {args.data} {result['model']}, {epochs}-epoch recipe, {args.seeds} training seeds; "
          "mean ± 95 % t half-width over seeds\n")
    print("\n\n".join(texts))
    print(f"\nJSON: {out}\nplot: {png}\nwall: {result['wall_s']:.0f} s")
    return 0


def _scenario(base: list[str], scenario: str, args: argparse.Namespace, t0: float) -> dict[str, Any]:
    """Default and calibrated experiments of one scenario."""
    overrides = [*base, SCENARIOS[scenario]]
    print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: default settings", flush=True)
    default = run_experiment(load_params(str(ROOT / "params.yaml"), [*overrides, "calibration.use_profile=false"]))
    points = points_of(default, "default")
    oracle_s = default["oracle"]["time/s"] if "time/s" in default.get("oracle", {}) else float("nan")
    base = default["original"]
    original = {"gap": base.get(GAP), "gap_ci": base.get("ci", {}).get(GAP), "forget": base.get("forget/acc"),
                "retain": base.get("retain/acc"), "test": base.get("test/acc")}
    calib_s: dict[str, float] = {}
    chosen: dict[str, Any] = {}
    if not args.no_calibrate:
        with tempfile.TemporaryDirectory() as scratch:
            cal_params = load_params(str(ROOT / "params.yaml"), [*overrides, f"calibration.profile_dir={scratch}"])
            split = load_split(cal_params)
            print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: calibrating on proxies", flush=True)
            cal = calibrate(cal_params, split, data_version=data_version(split))
            calib_s = {m: s.wall_s for m, s in cal.searches.items()}
            chosen = {m: {"chosen": s.chosen, "values": s.values, "trials": s.trials} for m, s in cal.searches.items()}
            print(f"[{time.perf_counter() - t0:6.0f} s] {scenario}: calibrated settings", flush=True)
            tuned = run_experiment(cal_params)
            points.update(points_of(tuned, "calibrated"))
    return {"points": points, "front": pareto(points, original), "oracle_s": oracle_s, "calibration_s": calib_s,
            "original": original, "original_gap": original["gap"], "original_gap_ci": original["gap_ci"],
            "calibration": chosen}


if __name__ == "__main__":
    sys.exit(main())
