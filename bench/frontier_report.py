"""What `bench/frontier.py` prints and draws: the frontier table (gap against speedup, Pareto front), the
per-metric table issue #12 asks for (forget, retain, test, MIA efficacy, gap, speedup, held-out proxy gap,
calibration cost) and the plot. Kept apart so the runner stays about running."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def is_noop(p: dict[str, Any], original: dict[str, Any] | None) -> bool:
    """A setting that left the model as it was: gap, forget and retain accuracy all equal the untouched
    original's (to 0.005 points and 0.0005). Calibration on random requests can choose such settings, since
    doing nothing is already close to the oracle there; such a point is not an unlearner and is off the front."""
    if not original:
        return False
    return all(finite(p[k]) and finite(original.get(k)) and abs(p[k] - original[k]) <= tol
               for k, tol in (("gap", 0.005), ("forget", 0.0005), ("retain", 0.0005)))


def read_alike(paths: list[Path], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The runs stored at `paths`; exits with a one-line reason unless each agrees with the first on `keys`
    (a missing key counts as empty: older files have no overrides)."""
    runs = [json.loads(p.read_text()) for p in paths]
    for p, run in zip(paths[1:], runs[1:], strict=True):
        for key in keys:
            if run.get(key, []) != runs[0].get(key, []):
                raise SystemExit(f"{p}: {key} {run.get(key)!r} differs from {paths[0]}: {runs[0].get(key)!r}")
    return runs


def pm(mean: Any, ci: Any, digits: int) -> str:
    """`mean ± half-width` of a 95 % interval, or the mean alone when there is no interval."""
    if not finite(mean):
        return "-"
    half = (ci[1] - ci[0]) / 2 if ci and all(finite(c) for c in ci) else float("nan")
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def _by_gap(points: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(points.items(), key=lambda kv: (kv[1]["gap"] if finite(kv[1]["gap"]) else 1e9))


def table(scenario: str, res: dict[str, Any]) -> str:
    """Gap and speedup per (method, settings), the front and no-op settings marked."""
    points, front, calib_s = res["points"], res["front"], res["calibration_s"]
    head = f"{'method (settings)':<30}{'avg gap (pts)':>16}{'speedup (x)':>16}{'forget':>8}{'retain':>8}{'calib s':>9}"
    lines = [f"## {scenario}: retrain {res['oracle_s']:.1f} s per model (mean); the original model, untouched, "
             f"is at {pm(res['original_gap'], res['original_gap_ci'], 2)} points",
             "(* on the Pareto front; = the same model as the untouched original: a no-op setting, off the front)",
             head, "-" * len(head)]
    for key, p in _by_gap(points):
        cal = calib_s.get(p["method"]) if p["settings"] == "calibrated" else None
        mark = "* " if key in front else "= " if is_noop(p, res.get("original")) else "  "
        lines.append(f"{mark + key:<30}{pm(p['gap'], p['gap_ci'], 2):>16}"
                     f"{pm(p['speedup'], p['speedup_ci'], 1):>16}{pm(p['forget'], None, 3):>8}"
                     f"{pm(p['retain'], None, 3):>8}{(f'{cal:.0f}' if cal is not None else ''):>9}")
    return "\n".join(lines)


def metrics_table(scenario: str, res: dict[str, Any]) -> str:
    """Every metric with its interval; for calibrated settings the held-out proxy's gap (default -> chosen)
    and the search's cost, so generalisation and price sit beside the live result."""
    cols = [("forget", "forget acc", 3), ("retain", "retain acc", 3), ("test", "test acc", 3),
            ("mia", "MIA eff", 3), ("gap", "avg gap", 2), ("speedup", "speedup", 1)]
    head = (f"{'method (settings)':<26}" + "".join(f"{title:>16}" for _, title, _ in cols)
            + f"{'held-out gap':>17}{'calib':>12}")
    lines = [f"### {scenario}: every metric (mean ± 95 % t half-width over training seeds); held-out gap = the "
             "held-out proxy's gap, default -> calibrated; calib = search wall time / trials", head, "-" * len(head)]
    original = res.get("original") or {}
    lines.append(f"{'original (untouched)':<26}" + "".join(
        f"{pm(original.get(k), original.get(k + '_ci'), d):>16}" for k, _, d in cols[:-1]) + f"{'':>16}")
    calib = res.get("calibration", {})
    for key, p in _by_gap(res["points"]):
        held, cost = "", ""
        if p["settings"] == "calibrated" and p["method"] in calib:
            c = calib[p["method"]]
            if finite(c.get("heldout_default_gap")) and finite(c.get("heldout_gap")):
                held = f"{c['heldout_default_gap']:.2f} -> {c['heldout_gap']:.2f}"
            if finite(c.get("heldout_vetoed_gap")):
                held = f"veto {c['heldout_vetoed_gap']:.2f}"
            cost = f"{res['calibration_s'].get(p['method'], float('nan')):.0f} s/{c.get('trials', '?')}"
        lines.append(f"{key:<26}" + "".join(f"{pm(p.get(k), p.get(k + '_ci'), d):>16}" for k, _, d in cols)
                     + f"{held:>17}{cost:>12}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per scenario: gap (log) against speedup (log), intervals as error bars, the front stepped."""
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
            if not (finite(p["gap"]) and finite(p["speedup"])):
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
        if finite(res.get("original_gap")):
            ax.axhline(max(res["original_gap"], floor), color="grey", ls=":", lw=1.5,
                       label=f"original, no unlearning ({res['original_gap']:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="speedup over retraining (x, log)",
               ylabel="average gap to the oracle (points, log)",
               title=f"{result['dataset']} {result['model']}, {result['epochs']} epochs: {scenario}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left", title="hollow: default, filled/*: calibrated", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
