"""The report page: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched).

A section the results cannot fill (no oracle, a regression task, an old results file without CIs or
details) is replaced by one line saying why, so every results file renders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .charts import histogram_chart, metric_chart, oracle_band, tradeoff_chart
from .results import gap_key, is_regression, key_metrics, models, request, row
from .svg import esc
from .tables import heatmap, results_table

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa;
  --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9; --inc:#9a6700; --inc-bg:#fff8c5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 6px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0; }
.warn { background: var(--inc-bg); color: var(--inc); padding: 6px 10px; border-radius: 6px; display: inline-block; }
.note, .lede { color: var(--muted); margin: 6px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); white-space: nowrap; }
thead th { background: var(--soft); font-weight: 600; text-align: center; font-size: 12.5px; white-space: normal;
  vertical-align: bottom; }
th[scope=row] { text-align: left; font-weight: 600; }
td.num { text-align: right; }
.pm, .seeds { color: var(--muted); font-size: 11px; font-weight: 400; }
td.num .pm { display: block; line-height: 1.1; }
.missing { color: #8c959f; text-align: center; }
tr.reference { background: #fbfcfd; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 7px; }
td.gate { text-align: center; line-height: 1.2; }
td.gate small { display: block; font-size: 10.5px; opacity: .85; }
.gate.pass, .badge.pass { background: var(--pass-bg); color: var(--pass); }
.gate.fail, .badge.fail { background: var(--fail-bg); color: var(--fail); }
.gate.inconclusive, .badge.inconclusive { background: var(--inc-bg); color: var(--inc); }
.gate.unknown, .badge.unknown { background: var(--soft); color: var(--muted); }
.gate-head { border-left: 1px solid var(--line); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600; font-size: 12px; }
.reasons { margin: 8px 0; color: var(--muted); }
.reasons summary { cursor: pointer; font-weight: 600; color: var(--ink); }
.reasons ul, .skipped { margin: 4px 0; padding-left: 20px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px 18px; }
figure { margin: 0; }
figcaption { font-weight: 600; font-size: 13px; margin: 4px 0 0 8px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 8px 0; color: var(--muted); font-size: 13px; }
.legend i { display: inline-block; width: 18px; height: 10px; margin-right: 5px; vertical-align: -1px; }
svg.chart { display: block; overflow: visible; }
svg text { font-family: inherit; fill: var(--ink); }
svg .tick { font-size: 10.5px; fill: var(--muted); }
svg .axis-title { font-size: 12px; fill: var(--muted); }
svg .label { font-size: 11.5px; font-weight: 600; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg .note { font-size: 11px; fill: var(--muted); }
svg .grid { stroke: #eef1f4; stroke-width: 1; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .ref { stroke: #8c959f; stroke-dasharray: 5 4; }
svg .dot { stroke: #fff; stroke-width: 1.5; }
svg .whisker { stroke-width: 1.6; }
svg .pareto { fill: none; stroke: #bc4c00; stroke-width: 2; stroke-dasharray: 6 4; }
svg .front-ring { fill: #fff3e0; stroke: #bc4c00; stroke-width: 2; }
svg .oracle-mark { fill: #24292f; }
svg .band { fill: #1a7f37; fill-opacity: .16; stroke: #1a7f37; stroke-opacity: .35; }
svg .oracle-line { stroke: #1a7f37; stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .hist-forget { fill: #d1242f; fill-opacity: .12; stroke: #d1242f; stroke-width: 1.8; }
svg .hist-test { fill: none; stroke: #0969da; stroke-width: 1.8; }
svg .hist-retain { fill: none; stroke: #8c959f; stroke-width: 1.2; stroke-dasharray: 3 3; }
table.heatmap td.heat { text-align: center; min-width: 46px; font-size: 12.5px; }
table.heatmap th.forgot { color: var(--fail); }
table.heatmap td.forgot { outline: 2px solid var(--fail); outline-offset: -2px; }
"""

METRIC_TITLES = {
    "forget/acc": "forget accuracy", "retain/acc": "retain accuracy", "test/acc": "test accuracy",
    "forget_test/acc": "forget-class test accuracy", "mia/entropy_lr": "entropy MIA (LR)",
    "mia/entropy_svc": "entropy MIA (SVC)", "mia/efficacy": "MIA efficacy", "zrf": "ZRF",
    "forget/mae": "forget MAE", "retain/mae": "retain MAE", "test/mae": "test MAE",
    "forget_test/mae": "forget-range test MAE", "mia/regression_svc": "regression MIA (SVC)",
}


GAP_NAMES = {"oracle/avg_gap": "average gap to the oracle", "oracle/w1": "W1 distance to the oracle's outputs"}


def _section(title: str, lede: str, build: Callable[[Mapping[str, Any]], str | None],
             results: Mapping[str, Any], missing: str) -> str:
    """One titled section; a line saying why in place of a body the results cannot fill.

    A malformed value that slipped past the tolerant readers costs its section, never the report.
    """
    try:
        body = build(results)
    except (ArithmeticError, LookupError, TypeError, ValueError) as err:
        body, missing = None, f"Could not draw this section from these results ({type(err).__name__}: {err})."
    content = f'<p class="lede">{lede}</p>{body}' if body else f'<p class="note">{esc(missing)}</p>'
    return f"<section><h2>{esc(title)}</h2>{content}</section>"


def _header(results: Mapping[str, Any]) -> str:
    req = request(results)
    title = f"{req.get('dataset', '?')}: forget {req.get('description') or req.get('scenario') or '?'}"
    facts = [f"{req[k]} {k}" for k in ("forget", "retain", "test") if k in req]
    facts += [f"request {req['hash']}"] if req.get("hash") else []
    facts += [f"scenario {req['scenario']}"] if req.get("scenario") else []
    facts += [f"device {results['device']}"] if results.get("device") else []
    seeds = results.get("seeds")
    if isinstance(seeds, Mapping):
        facts += [f"{k} seeds {json.dumps(v)}" for k, v in seeds.items()]
    warn = "" if results.get("complete", True) else '<p class="warn">Partial results: the run did not finish.</p>'
    return (f"<header><h1>Unlearning report — {esc(title)}</h1>"
            f'<p class="meta">{esc(" · ".join(facts))}</p>{warn}</header>')


def _legend(items: list[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="{s}"></i>{esc(t)}</span>' for s, t in items) + "</div>"


def _model_legend(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(f"background:{m.colour};border-radius:50%;width:10px", m.label)
            for m in models(results) if m.name != "oracle"]


def _metrics_section(results: Mapping[str, Any]) -> str | None:
    figures = [(k, metric_chart(results, k)) for k in key_metrics(results)]
    figures = [(k, f) for k, f in figures if f]
    if not figures:
        return None
    band = next((b[2] for k, _ in figures if (b := oracle_band(results, k))), None)
    legend = _model_legend(results)
    legend += [("background:rgba(26,127,55,.16);border:1px solid rgba(26,127,55,.35)", f"band: {band}")] if band else []
    legend += [("border-top:2px dashed #1a7f37;height:0", "oracle mean")] if row(results, "oracle") else []
    charts = "".join(f"<figure><figcaption>{esc(METRIC_TITLES.get(k, k))}</figcaption>{f}</figure>" for k, f in figures)
    return _legend(legend) + f'<div class="grid">{charts}</div>'


def _histograms_section(results: Mapping[str, Any]) -> str | None:
    details = results.get("details")
    if not isinstance(details, Mapping):
        return None
    figures = [(m.label, histogram_chart(m.label, details[m.name])) for m in models(results)
               if isinstance(details.get(m.name), Mapping)]
    figures = [(label, f) for label, f in figures if f]
    if not figures:
        return None
    legend = _legend([("border-top:2px solid #d1242f;background:rgba(209,36,47,.12)", "forget samples"),
                      ("border-top:2px solid #0969da;height:0", "test samples (never trained on)"),
                      ("border-top:2px dashed #8c959f;height:0", "retain samples")])
    charts = "".join(f"<figure><figcaption>{esc(label)}</figcaption>{f}</figure>" for label, f in figures)
    return legend + f'<div class="grid">{charts}</div>'


def render_report(results: Mapping[str, Any]) -> str:
    """The whole report page as one HTML string (see the module docstring for what it holds).

    Args:
        results: what `python -m unlearning --out` writes; only `request`, `original` and `methods` are needed.

    Returns:
        A complete, self-contained HTML document.
    """
    regression = is_regression(results)
    key = gap_key(results)
    gap_name = GAP_NAMES.get(key, key or "gap")
    sections = [
        _section("Results and gate decisions",
                 "Mean ± half-width of the 95 % CI over seeds (just the mean without a CI). Gate cells show "
                 "value [CI] and limit in points; hover for the reason.", results_table, results, ""),
        _section("Quality versus cost",
                 f"Each method's speedup over retraining against its {esc(gap_name)} (lower is better), with "
                 "95 % CIs as error bars.", tradeoff_chart, results,
                 "No method with both a speedup and a distance to the oracle (run with evaluate.oracle on)."),
        _section("Metrics against the retrained models",
                 "One dot (with its 95 % CI) per model; the shaded band is where the retrained oracle lands.",
                 _metrics_section, results, "No headline metric in these results."),
        _section("Membership signal distributions",
                 "Share of forget, test and retain samples per bin of the per-sample signal. A model that forgot "
                 "well treats forget samples like test samples, as the oracle does.", _histograms_section, results,
                 "No per-model details in these results (written by a runner that does not record them)."),
        _section("Per-class test accuracy", "Test accuracy of each model on each class.", heatmap, results,
                 "Not applicable to regression results." if regression
                 else "No per-class accuracies in these results (no per-model details recorded)."),
    ]
    title = esc(f"Unlearning report: {request(results).get('dataset', '?')}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><main>{_header(results)}{''.join(sections)}</main></body></html>\n")


def write_report(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render the report and write it atomically (a reader never sees half a page).

    Args:
        results: what `python -m unlearning --out` writes.
        path: the HTML file to write; its folder is created.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(results), encoding="utf-8")
    tmp.replace(path)
    return path
