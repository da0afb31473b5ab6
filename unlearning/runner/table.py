"""Plain-text results table for `python -m unlearning` (one row per model)."""

from __future__ import annotations

import math
from typing import Any

CLASSIFICATION_COLUMNS = [
    ("forget/acc", "forget"), ("retain/acc", "retain"), ("test/acc", "test"),
    ("forget_test/acc", "fgt-test"), ("mia/entropy_lr", "MIA-ent"), ("mia/entropy_svc", "MIA-ent"),
    ("mia/loss_cv", "MIA-loss"), ("mia/efficacy", "MIA-eff"), ("zrf", "ZRF"), ("oracle/js", "JS-orc"),
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
    """Rows: original, oracle, each method; columns: the metrics present, time and speedup."""
    rows: list[tuple[str, dict[str, Any]]] = [("original", results["original"])]
    if "oracle" in results:
        rows.append(("oracle (retrain)", results["oracle"]))
    rows += list(results["methods"].items())
    regression = any(k.endswith("/mae") for k in results["original"])
    columns = REGRESSION_COLUMNS if regression else CLASSIFICATION_COLUMNS
    present = [(k, h) for k, h in columns if any(k in r for _, r in rows)]
    header = ["model"] + [h for _, h in present]
    body = []
    for name, row in rows:
        cells = [name]
        for key, _ in present:
            cell = _fmt(row.get(key), key)
            std = row.get(f"{key}/std")
            if isinstance(std, float) and not math.isnan(std) and key not in ("speedup",):
                cell += f"±{_fmt(std, key)}"
            cells.append(cell)
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]
    out += [f"{name}: skipped, {row['skipped']}" for name, row in rows if row.get("skipped")]
    req = results["request"]
    title = (f"{req['dataset']}: forget {req['description']} ({req['forget']} forget / {req['retain']} retain "
             f"samples, request {req['hash']}); speedup = {results.get('speedup_reference', 'oracle')} time / "
             f"method time; device {results.get('device', '?')}")
    return title + "\n" + "\n".join(out)
