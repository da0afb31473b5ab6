"""One table per recipe from several `bench/frontier.py` runs: issue #12's "done when" in one place.

Long searches ran one method at a time, so a recipe's results are spread over many files. This joins them:
the files are read in the order given and a later file's point (method, settings) replaces an earlier one's,
so list them oldest first. Every file must have the same data, model, recipe and training seeds; a file's
overrides (mnemonic's bases trained with codes) are shown beside the rows it supplied. Per scenario it prints
each method's default and calibrated gap and speedup, the calibrated metrics, the held-out proxy's gap and
the search's cost, the source files, the weak labels, and #12's checks:
- class requests: every method not labelled weak within 2 points after calibration (the calibrated point,
  or the default where no search ran), and which are within 1 point at 10x or more;
- random requests: which beat the untouched original's gap at 5x or more (no-op settings excluded).

    .venv/bin/python bench/frontier_digest.py --runs A.json B.json ... --out bench/results/digest-X.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.frontier_report import finite, is_noop, pm, read_alike  # noqa: E402
from unlearning.catalog import method_catalogue  # noqa: E402

SAME = ("dataset", "model", "epochs", "seeds")


def join(paths: list[Path]) -> dict[str, Any]:
    """The runs' points per scenario and method, later files winning, each point tagged with its file."""
    runs = read_alike(paths, SAME)
    out: dict[str, Any] = {k: runs[0][k] for k in SAME} | {"files": [str(p) for p in paths], "scenarios": {}}
    for p, run in zip(paths, runs, strict=True):
        for scenario, res in run["scenarios"].items():
            s = out["scenarios"].setdefault(scenario, {"original": res.get("original"), "original_gaps": {},
                                                       "methods": {}})
            s["original_gaps"][p.stem] = res.get("original_gap")
            for name, c in res.get("calibration", {}).items():  # a newer search replaces the older outcome
                m = s["methods"].setdefault(name, {})
                m.pop("calibrated", None)
                m["calibration"], m["calibration_s"] = c, res.get("calibration_s", {}).get(name)
            for point in res["points"].values():
                m = s["methods"].setdefault(point["method"], {})
                m[point["settings"]] = point | {"file": p.stem, "overrides": run.get("overrides") or []}
    return out


def points(m: dict[str, Any]) -> list[dict[str, Any]]:
    """A method's default and calibrated points, those present."""
    return [m[k] for k in ("default", "calibrated") if k in m]


def settled(m: dict[str, Any]) -> dict[str, Any] | None:
    """The point #12 judges: the calibrated one; the default where no search ran or the search kept the
    defaults (a held-out veto records that too); None where a search chose settings that never ran live."""
    if "calibrated" in m:
        return m["calibrated"]
    if m.get("calibration", {}).get("chosen", "defaults") == "defaults":
        return m.get("default")
    return None


def calibrated_cell(m: dict[str, Any], key: str, digits: int) -> str:
    """The calibrated point's value, or why there is none."""
    if "calibrated" in m:
        return _cell(m["calibrated"], key, digits)
    c = m.get("calibration")
    return "no search" if c is None else "kept defaults" if c.get("chosen") == "defaults" else "not run"


def gap_of(m: dict[str, Any]) -> float:
    p = settled(m)
    return p["gap"] if p and finite(p["gap"]) else float("inf")


def checks(scenario: str, s: dict[str, Any], weak: dict[str, str]) -> list[str]:
    """#12's criteria for this scenario, as lines."""
    methods = {name: m for name, m in s["methods"].items() if "default" in m or "calibrated" in m}
    if scenario.startswith("class"):
        judged = {n: gap_of(m) for n, m in methods.items() if n not in weak}
        miss = sorted(n for n, g in judged.items() if not g <= 2.0)
        fast = sorted({p["method"] for m in methods.values() for p in points(m)
                       if finite(p["gap"]) and p["gap"] <= 1.0 and p["speedup"] >= 10.0})
        return [f"- not labelled weak and within 2 points after calibration: {len(judged) - len(miss)} of "
                f"{len(judged)}" + (f" (missing: {', '.join(miss)})" if miss else ""),
                f"- within 1 point at 10x or more: {', '.join(fast) or 'none'}"]
    original = s["original"] or {}
    base = next((g for g in s["original_gaps"].values() if finite(g)), float("nan"))
    beat = sorted({p["method"] for m in methods.values() for p in points(m)
                   if finite(p["gap"]) and p["gap"] < base and p["speedup"] >= 5.0 and not is_noop(p, original)})
    return [f"- beat the untouched original's gap ({base:.2f}) at 5x or more: {', '.join(beat) or 'none'}"]


def _cell(p: dict[str, Any] | None, key: str, digits: int) -> str:
    return pm(p.get(key), p.get(key + "_ci"), digits) if p else "-"


def markdown(d: dict[str, Any]) -> str:
    weak_on = {row["name"]: row["weak_on"] for row in method_catalogue()}
    lines = [f"# {d['dataset']} {d['model']}, {d['epochs']}-epoch recipe, {d['seeds']} training seeds",
             "", "mean ± 95 % t half-width over training seeds; gap = average gap to the retrained oracle in "
             "points; speedup = retrain time / method time in the same run; held-out = the held-out proxy's gap, "
             "default -> calibrated; calib = search wall time / trials.", "",
             "Joined from (later replaces earlier): " + ", ".join(Path(f).stem for f in d["files"])]
    for scenario, s in d["scenarios"].items():
        kind = scenario.split()[0]
        weak = {n: w[kind] for n, w in weak_on.items() if kind in w}
        gaps = ", ".join(f"{g:.2f}" for g in s["original_gaps"].values() if finite(g))
        lines += ["", f"## {scenario}", "", f"The untouched original is {gaps} points off (per file).", "",
                  "| method | default gap | default speedup | calibrated gap | calibrated speedup | forget | retain "
                  "| test | MIA eff | held-out | calib | from |", "|" + "---|" * 12]
        for name, m in sorted(s["methods"].items(), key=lambda kv: gap_of(kv[1])):
            dft, c = m.get("default"), m.get("calibration", {})
            held = (f"{c['heldout_default_gap']:.2f} -> {c['heldout_gap']:.2f}"
                    if finite(c.get("heldout_default_gap")) and finite(c.get("heldout_gap")) else "")
            held += f" (vetoed: {c['heldout_vetoed_gap']:.2f})" if finite(c.get("heldout_vetoed_gap")) else ""
            cost = f"{m['calibration_s']:.0f} s / {c.get('trials', '?')}" if finite(m.get("calibration_s")) else ""
            src = sorted({p["file"] + (f" {p['overrides']}" if p["overrides"] else "") for p in points(m)})
            shown = settled(m)
            lines.append(f"| {name}{' (weak)' if name in weak else ''} | {_cell(dft, 'gap', 2)} | "
                         f"{_cell(dft, 'speedup', 1)} | {calibrated_cell(m, 'gap', 2)} | {calibrated_cell(m, 'speedup', 1)} | "
                         + " | ".join(_cell(shown, k, 3) for k in ("forget", "retain", "test", "mia"))
                         + f" | {held} | {cost} | {'; '.join(src)} |")
        lines += ["", "Accuracies and MIA: the calibrated point, else the default. kept defaults: the search (or its "
                  "held-out veto) kept the defaults, so the calibrated model is the default one.", ""] + checks(scenario, s, weak)
        lines += [f"- weak here: {n}: {why}" for n, why in sorted(weak.items()) if n in s["methods"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, metavar="JSON", help="frontier results, oldest first")
    ap.add_argument("--out", required=True, help="markdown path")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.runs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        ap.error(f"no such file: {missing[0]}")
    text = markdown(join(paths))
    Path(args.out).write_text(text)
    print(text + f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
