"""Plain-text results for `python -m unlearning`: one row per model (mean ± 95 % half-width), then the gates."""

from __future__ import annotations

import math
from typing import Any

from ..stats import half_width
from ..verdicts import gate_digits

CLASSIFICATION_COLUMNS = [
    ("forget/acc", "forget"), ("retain/acc", "retain"), ("test/acc", "test"),
    ("forget_test/acc", "fgt-test"), ("mia/entropy_lr", "MIA-ent"), ("mia/entropy_svc", "MIA-ent"),
    ("mia/loss_cv", "MIA-loss"), ("mia/efficacy", "MIA-eff"), ("membership/shift", "mem-shift"), ("zrf", "ZRF"),
    ("oracle/js", "JS-orc"),
    ("oracle/avg_gap", "gap"), ("ain", "AIN"), ("time/s", "time s"), ("speedup", "speedup"),
]
REGRESSION_COLUMNS = [
    ("forget/mae", "forget MAE"), ("retain/mae", "retain MAE"), ("test/mae", "test MAE"),
    ("forget_test/mae", "fgt-test MAE"), ("oracle/w1", "W1-orc"), ("mia/regression_svc", "MIA"),
    ("ain", "AIN"), ("time/s", "time s"), ("speedup", "speedup"),
]


def _fmt(value: Any, key: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    if math.isnan(value):
        return "nan"
    if key == "speedup":
        return f"{value:.1f}x"
    if key == "time/s":
        return f"{value:.2f}"
    if key.endswith("/mae") or key == "oracle/w1":
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(results: dict[str, Any]) -> str:
    """Rows: original, oracle, each method; columns: the metrics present, time and speedup; then the gates."""
    rows: list[tuple[str, dict[str, Any]]] = [("original", results["original"])]
    if "oracle" in results:
        rows.append(("oracle (retrain)", results["oracle"]))
    weak = results.get("weak") or {}
    rows += [(f"{m} (weak)" if m in weak else m, r) for m, r in results["methods"].items()]
    regression = any(k.endswith("/mae") for k in results["original"])
    columns = REGRESSION_COLUMNS if regression else CLASSIFICATION_COLUMNS
    present = [(k, h) for k, h in columns if any(k in r for _, r in rows)]
    header = ["model"] + [h for _, h in present]
    body = []
    for name, row in rows:
        cells = [name]
        for key, _ in present:
            cell = _fmt(row.get(key), key)
            half = half_width((row.get("ci") or {}).get(key))
            if half is not None and key not in ("speedup", "time/s"):
                cell += f" ± {_fmt(half, key)}"
            cells.append(cell)
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]
    out += [f"{name}: skipped, {row['skipped']}" for name, row in rows if row.get("skipped")]
    out += [f"{m} (weak): {why}" for m, why in weak.items()]
    out += calibration_lines(results)
    req = results["request"]
    title = (f"{req['dataset']}: forget {req['description']} ({req['forget']} forget / {req['retain']} retain "
             f"samples, request {req['hash']}); speedup = {results.get('speedup_reference', 'oracle')} time / "
             f"method time; device {results.get('device', '?')}")
    seeds = results.get("seeds")
    if seeds:
        title += (f"\nmean ± 95 % CI half-width over {len(seeds['training'])} training seed(s) x "
                  f"{len(seeds['unlearning'])} unlearning seed(s) (one model: bootstrap over samples)")
    gates = format_gates(results)
    return title + "\n" + "\n".join(out) + (f"\n\n{gates}" if gates else "")


def calibration_lines(results: dict[str, Any]) -> list[str]:
    """Which calibration profile the run used and the settings it filled (explicit params always win)."""
    cal = results.get("calibration") or {}
    if not cal.get("profile"):
        return []
    lines = [f"calibration profile {cal['profile']} (settings from it below; params win over it):"]
    for m, row in results["methods"].items():
        if row.get("skipped"):
            continue
        from_profile = [k for k, src in (row.get("settings_source") or {}).items() if src == "profile"]
        shown = ", ".join(f"{k}={_setting(row['settings'][k])}" for k in from_profile)
        lines.append(f"  {m}: {shown or 'none (defaults or params)'}")
    return lines + [f"  note: {n}" for n in cal.get("notes", [])]


def _setting(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_gates(results: dict[str, Any]) -> str:
    """One row per gated method: each gate's verdict and value (points), then the method's verdict."""
    gates = results.get("gates") or {}
    if not gates:
        return ""
    names = list(dict.fromkeys(g["name"] for gs in gates.values() for g in gs))
    header = ["gates (points)"] + names + ["verdict"]
    body = []
    for method, gs in gates.items():
        by = {g["name"]: g for g in gs}
        cells = [method]
        for n in names:
            g = by.get(n)
            value = g["value"] if g else None
            shown = "-" if g is None else (g["verdict"] if not isinstance(value, int | float) or math.isnan(value)
                                           else f"{g['verdict']} {value:+.{gate_digits(n)}f}/"
                                                f"{g['threshold']:.{gate_digits(n)}f}")
            cells.append(shown)
        cells.append(str(results.get("verdicts", {}).get(method, "-")).upper())
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = ["value/threshold: the difference to the retrains' mean (or the drop) against the larger of the "
             "limit and where 99 % of retrains land; membership_vs_oracle in log-odds"]
    notes += [f"note: {n}" for n in results.get("notes", [])]
    return "\n".join(lines + notes)
