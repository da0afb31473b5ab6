"""Does the held-out veto help calibration? Replays stored frontier runs without training anything (runs
made before `calibration.heldout_veto` existed, or with it null).

The veto: keep a method's defaults when its searched choice scores more than `--tolerance` gap points worse
than the defaults on the held-out proxy. For each search that chose a setting, the live gap with the veto
is the calibrated point's when the choice passes and the default point's when it is vetoed (same seeds,
so the same model). Prints every search and the mean live gap with and without the veto.

    python bench/heldout_veto.py                      # every bench/results/frontier-*.json
    python bench/heldout_veto.py A.json B.json --tolerance 0.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def searches(path: Path) -> list[dict]:
    """One row per (scenario, method) whose calibration chose a searched setting and has both points."""
    data = json.loads(path.read_text())
    rows = []
    for scenario, res in data.get("scenarios", {}).items():
        for method, cal in (res.get("calibration") or {}).items():
            default, tuned = (res["points"].get(f"{method} ({s})") for s in ("default", "calibrated"))
            if cal.get("chosen") != "search" or not default or not tuned:
                continue
            rows.append({"run": path.stem, "scenario": scenario, "method": method,
                         "heldout_default": cal["heldout_default_gap"], "heldout_chosen": cal["heldout_gap"],
                         "live_default": default["gap"], "live_calibrated": tuned["gap"]})
    return rows


def main() -> None:
    root = Path(__file__).resolve().parent / "results"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="frontier JSON files (default: bench/results/frontier-*.json)")
    ap.add_argument("--tolerance", type=float, default=1.0,
                    help="held-out gap points a choice may lose (calibration.heldout_veto's default)")
    args = ap.parse_args()
    rows = [r for path in (args.runs or sorted(root.glob("frontier-*.json"))) for r in searches(path)]
    if not rows:
        raise SystemExit("no calibrated searches in those runs")
    helped = hurt = 0
    total_cal = total_veto = 0.0
    for r in rows:
        vetoed = r["heldout_chosen"] > r["heldout_default"] + args.tolerance
        live = r["live_default"] if vetoed else r["live_calibrated"]
        total_cal, total_veto = total_cal + r["live_calibrated"], total_veto + live
        mark = ""
        if vetoed:
            better = r["live_default"] < r["live_calibrated"]
            helped, hurt = helped + better, hurt + (not better)
            mark = "  vetoed: " + ("better" if better else "worse")
        print(f"{r['run']:<36}{r['scenario']:<12}{r['method']:<14}held-out {r['heldout_default']:7.2f} -> "
              f"{r['heldout_chosen']:7.2f}   live {r['live_default']:7.2f} -> {r['live_calibrated']:7.2f}{mark}")
    n = len(rows)
    print(f"\n{n} searches; the veto rejects {helped + hurt} ({helped} for the better, {hurt} for the worse); "
          f"mean live gap {total_cal / n:.2f} calibrated, {total_veto / n:.2f} with the veto")


if __name__ == "__main__":
    main()
