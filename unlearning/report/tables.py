"""The report's HTML tables: results with intervals and gate verdicts, and the per-class accuracy heatmap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..verdicts import LOG_ODDS_GATES, VERDICTS, gate_digits
from .results import Model, gates, interval, is_regression, models, number, request, skipped, value, verdict
from .svg import esc, mix

CLASSIFICATION_COLUMNS = (
    ("forget/acc", "forget acc"), ("retain/acc", "retain acc"), ("test/acc", "test acc"),
    ("forget_test/acc", "forget-test acc"), ("mia/entropy_lr", "MIA entropy"), ("mia/entropy_svc", "MIA entropy"),
    ("mia/efficacy", "MIA efficacy"), ("zrf", "ZRF"), ("oracle/avg_gap", "gap (pts)"), ("ain", "AIN"),
    ("time/s", "time (s)"), ("speedup", "speedup"),
)
REGRESSION_COLUMNS = (
    ("forget/mae", "forget MAE"), ("retain/mae", "retain MAE"), ("test/mae", "test MAE"),
    ("forget_test/mae", "forget-test MAE"), ("mia/regression_svc", "MIA"), ("oracle/w1", "W1 to oracle"),
    ("ain", "AIN"), ("time/s", "time (s)"), ("speedup", "speedup"),
)

HEAT_RAMP = ("#f7fbff", "#9ecae1", "#2171b5", "#08306b")  # accuracy 0 -> 1, light to dark


def fmt(key: str, v: float) -> str:
    """A metric at the precision it deserves: speedups as 7.4×, errors and gaps with 2 decimals."""
    if key == "speedup":
        return f"{v:.1f}×"
    if key.endswith(("/s", "/mae")) or key in ("oracle/avg_gap", "oracle/w1"):
        return f"{v:.2f}"
    return f"{v:.3f}"


def metric_cell(metrics: Mapping[str, Any], key: str) -> str:
    """`mean ± half-width of the 95 % CI`, just the mean without a CI, a dash without a value."""
    v = value(metrics, key)
    if v is None:
        return '<td class="num missing">–</td>'
    ci = interval(metrics, key)
    if ci is None:
        return f'<td class="num">{fmt(key, v)}</td>'
    half = (ci[1] - ci[0]) / 2
    tip = f"95 % CI [{fmt(key, ci[0])}, {fmt(key, ci[1])}]"
    return f'<td class="num" title="{esc(tip)}">{fmt(key, v)}<span class="pm">± {fmt(key, half).rstrip("×")}</span></td>'


def _points(v: Any, digits: int = 1) -> str:
    n = number(v)
    return "?" if n is None else f"{n:.{digits}f}"


def gate_cell(gate: Mapping[str, Any] | None) -> str:
    """A gate's verdict, coloured, with its value [CI] / limit below and the reason as a tooltip."""
    if gate is None:
        return '<td class="gate none">–</td>'
    word = str(gate.get("verdict") or "unknown")
    ci = gate.get("ci")
    name = str(gate.get("name") or "")
    digits, unit = gate_digits(name), "log-odds" if name in LOG_ODDS_GATES else "points"
    span = f" [{_points(ci[0], digits)}, {_points(ci[1], digits)}]" if isinstance(ci, list) and len(ci) == 2 else ""
    value, limit = f"{_points(gate.get('value'), digits)}{span}", f"limit {_points(gate.get('limit'), digits)}"
    tip = f"{gate.get('reason') or word} ({value}, {limit}; {unit})"
    cls = word if word in VERDICTS else "unknown"
    return (f'<td class="gate {cls}" title="{esc(tip)}"><b>{esc(word)}</b><small>{esc(value)}</small>'
            f"<small>{esc(limit)}</small></td>")


def verdict_badge(word: str | None) -> str:
    if not word:
        return '<span class="badge none">–</span>'
    return f'<span class="badge {word if word in VERDICTS else "unknown"}">{esc(word)}</span>'


def _name_cell(m: Model) -> str:
    seeds = number(m.metrics.get("n_seeds"))
    n = f' <span class="seeds">n={int(seeds)}</span>' if seeds is not None else ""
    return f'<th scope="row"><span class="swatch" style="background:{m.colour}"></span>{esc(m.label)}{n}</th>'


def results_table(results: Mapping[str, Any]) -> str:
    """One row per model: metrics with CIs, then one coloured cell per gate and the overall verdict."""
    rows = models(results)
    columns = REGRESSION_COLUMNS if is_regression(results) else CLASSIFICATION_COLUMNS
    present = [(k, h) for k, h in columns if any(value(m.metrics, k) is not None for m in rows)]
    gate_names = list(dict.fromkeys(g["name"] for m in rows if m.is_method for g in gates(results, m.name)))
    has_verdicts = any(verdict(results, m.name) for m in rows if m.is_method)
    head = ['<th scope="col">model</th>'] + [f'<th scope="col" title="{esc(k)}">{esc(h)}</th>' for k, h in present]
    # <wbr> lets a long gate name such as mia_vs_oracle break at its underscores.
    head += [f'<th scope="col" class="gate-head" title="gate {esc(g)}">{esc(g).replace("_", "_<wbr>")}</th>'
             for g in gate_names]
    head += ['<th scope="col">verdict</th>'] if gate_names or has_verdicts else []
    body = []
    for m in rows:
        cells = [_name_cell(m)] + [metric_cell(m.metrics, k) for k, _ in present]
        by_name = {g["name"]: g for g in gates(results, m.name)}
        cells += [gate_cell(by_name.get(g)) if m.is_method else '<td class="gate none"></td>' for g in gate_names]
        if gate_names or has_verdicts:
            cells.append(f"<td>{verdict_badge(verdict(results, m.name)) if m.is_method else ''}</td>")
        body.append(f'<tr class="{"method" if m.is_method else "reference"}">' + "".join(cells) + "</tr>")
    table = (f'<div class="scroll"><table class="results"><thead><tr>{"".join(head)}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    return table + _skipped_list(results) + _gate_reasons(results, rows)


def _skipped_list(results: Mapping[str, Any]) -> str:
    items = "".join(f"<li><b>{esc(n)}</b>: {esc(r)}</li>" for n, r in skipped(results).items())
    return f'<p class="note">Skipped methods:</p><ul class="skipped">{items}</ul>' if items else ""


def _gate_reasons(results: Mapping[str, Any], rows: list[Model]) -> str:
    items = [f'<li><b>{esc(m.name)}</b> · {esc(g["name"])}: {verdict_badge(str(g.get("verdict") or ""))} '
             f'{esc(g.get("reason") or "")}</li>' for m in rows if m.is_method for g in gates(results, m.name)]
    if not items:
        return ""
    return f'<details class="reasons" open><summary>Gate reasons</summary><ul>{"".join(items)}</ul></details>'


def heatmap(results: Mapping[str, Any]) -> str | None:
    """Test accuracy per class (columns) for each model (rows); the forgotten classes' columns marked."""
    details = results.get("details")
    details = details if isinstance(details, Mapping) else {}
    rows = []
    for m in models(results):
        accs = (details.get(m.name) or {}).get("per_class_test_acc") if isinstance(details.get(m.name), Mapping) else None
        if isinstance(accs, list) and accs:
            rows.append((m, [number(a) for a in accs]))
    if not rows:
        return None
    req = request(results)
    # Subclass requests list fine ids, which are not these (coarse) columns: mark class requests only.
    marked = req.get("forget_classes") if req.get("scenario") in (None, "class") else None
    forgotten = {c for c in marked if isinstance(c, int)} if isinstance(marked, list) else set()
    n = max(len(a) for _, a in rows)
    head = "".join(f'<th scope="col" class="{"forgot" if c in forgotten else ""}">{c}{" ✕" if c in forgotten else ""}</th>'
                   for c in range(n))
    body = []
    for m, accs in rows:
        cells = []
        for c in range(n):
            a = accs[c] if c < len(accs) else None
            forgot = " forgot" if c in forgotten else ""
            if a is None:
                cells.append(f'<td class="heat missing{forgot}">–</td>')
                continue
            shade = min(max(a, 0.0), 1.0) ** 3  # most accuracies are high: spend the ramp where 0.85 and 0.98 differ
            ink = "#ffffff" if shade > 0.45 else "#1f2328"
            cells.append(f'<td class="heat{forgot}" style="background:{mix(HEAT_RAMP, shade)};color:{ink}" '
                         f'title="{esc(m.label)}, class {c}: {a:.3f}">{a:.2f}</td>')
        body.append(f"<tr>{_name_cell(m)}{''.join(cells)}</tr>")
    note = f'<p class="note">✕ forgotten class{"es" if len(forgotten) > 1 else ""}.</p>' if forgotten else ""
    return (f'<div class="scroll"><table class="heatmap"><thead><tr><th scope="col">model \\ class</th>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>{note}')
