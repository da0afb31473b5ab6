"""The DVC metrics of a pipeline run: one small file that `dvc exp show`, `dvc metrics show` and
`dvc metrics diff` read, and the comparison plot of every model drawn from it.

The detailed metric files (`outputs/metrics/<model>.json`, 20-odd metrics and intervals per model) gave
`dvc exp show` 330 columns with ten methods; they stay DVC outs (and MLflow metrics). `outputs/summary.json`
keeps, per model, what a comparison starts with:

    {"original": {"forget/acc", "retain/acc", "test/acc", "mia/entropy_lr"},
     "oracle":   {... the same},
     "<method>": {... the same, "oracle/avg_gap", "speedup", "verdict"}}

(`*/mae` instead of `*/acc` for regression; `verdict`: 1 pass, 0.5 inconclusive, 0 fail, as the gate
metrics in MLflow). dvc.yaml declares it with `cache: false`: git keeps it beside dvc.lock, so
`dvc metrics diff HEAD` reads any commit's values without the DVC cache of the clone that ran it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .plots import read_per_class, write_comparison
from .settings import PLOTS_DIR

SUMMARY_FILE = "outputs/summary.json"
COMPARISON_PLOT = "outputs/comparison.png"
VERDICT_CODE = {"pass": 1.0, "inconclusive": 0.5, "fail": 0.0}
METHOD_KEYS = ("oracle/avg_gap", "speedup")
DIGITS = 4  # enough for an accuracy in points to two decimals; keeps the file and the table readable


def model_keys(mia_classifier: str) -> tuple[str, ...]:
    """The scores kept for every model (the regression ones are kept where the task gives them)."""
    return ("forget/acc", "retain/acc", "test/acc", "forget/mae", "retain/mae", "test/mae",
            f"mia/entropy_{mia_classifier}", "mia/regression_svc")


def _pick(metrics: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
    return {k: round(float(metrics[k]), DIGITS) for k in keys
            if isinstance(metrics.get(k), int | float) and math.isfinite(metrics[k])}


def summarize(mia_classifier: str, base: Mapping[str, Any], oracle: Mapping[str, Any] | None,
              methods: Mapping[str, Mapping[str, Any]], verdicts: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """The summary of one run: original, oracle (when trained), then each evaluated method in order.

    Args:
        mia_classifier: `evaluate.mia_classifier` (which entropy-MIA score the gates use).
        base: the original model's metrics; oracle: the oracle's, None without one.
        methods: each evaluated method's metrics (skipped methods absent).
        verdicts: each method's overall gate verdict (`pass`, `inconclusive`, `fail`).
    """
    keys = model_keys(mia_classifier)
    out = {"original": _pick(base, keys)}
    if oracle is not None:
        out["oracle"] = _pick(oracle, keys)
    for method, metrics in methods.items():
        if method in out:
            raise ValueError(f"method name {method!r} collides with a model of the summary")
        out[method] = {**_pick(metrics, (*keys, *METHOD_KEYS)), "verdict": VERDICT_CODE[verdicts[method]]}
    return out


def write_summary(root: Path, params: Any, base: Mapping[str, Any], oracle: Mapping[str, Any] | None,
                  rows: Mapping[str, Mapping[str, Any]], gates: Mapping[str, Sequence[Any]]) -> list[Path]:
    """Write `outputs/summary.json` and `outputs/comparison.png` of a gated run; returns both paths.

    `rows`: each gated method's metrics; `gates`: its gate verdicts (`unlearning.verdicts.GateVerdict`).
    Both files are written whole (temporary file, then rename) and are byte-identical for the same inputs,
    so an unchanged rerun leaves dvc.lock as it was.
    """
    from unlearning.verdicts import overall

    verdicts = {m: overall(gates.get(m, [])) for m in rows}
    summary = summarize(params.evaluate.mia_classifier, base, oracle, rows, verdicts)
    path = root / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")  # insertion order: original, oracle, methods
    classes, per_class = read_per_class(root / PLOTS_DIR, list(rows))
    png = root / COMPARISON_PLOT
    write_comparison(png.with_suffix(".tmp.png"), summary, classes, per_class).replace(png)
    tmp.replace(path)
    return [path, png]
