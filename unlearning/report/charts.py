"""The report's charts as inline SVG: quality versus cost, metric dots against the oracle band, histograms.

Each function returns one `<svg>` string, or None when the results hold nothing to draw; the page says
why in a line instead of showing an empty frame.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .results import Model, gap_key, interval, models, number, pareto_front, row, value
from .svg import (
    CHAR_W,
    Scale,
    axes,
    circle,
    error_bar,
    line,
    overlaps,
    padded,
    polyline,
    rect,
    svg,
    text,
    tick_label,
)

Box = tuple[float, float, float, float]
GAP_TITLES = {"oracle/avg_gap": "average gap to the oracle (points, lower is better)",
              "oracle/w1": "W1 distance to the oracle's outputs (lower is better)"}
SIGNAL_TITLES = {"entropy": "entropy of the softmax", "l1": "L1 error", "confidence": "true-class confidence"}
FRACTION_PREFIXES = ("forget/acc", "retain/acc", "test/acc", "forget_test/acc", "mia/", "zrf")


def place_labels(items: Sequence[tuple[float, float, str]], obstacles: list[Box], frame: Box) -> list[str]:
    """Name labels beside their points, each at the first nearby spot that is free and inside `frame`."""
    placed, out = list(obstacles), []
    for x, y, label in items:
        w = len(label) * CHAR_W
        spots = [(x + 8, y + 4, "start"), (x - 8, y + 4, "end"), (x, y - 9, "middle"), (x, y + 17, "middle"),
                 (x + 7, y - 8, "start"), (x + 7, y + 15, "start"), (x - 7, y - 8, "end"), (x - 7, y + 15, "end")]
        boxes = []
        for tx, ty, anchor in spots:
            x0 = tx if anchor == "start" else tx - w if anchor == "end" else tx - w / 2
            boxes.append((x0 - 2, ty - 11, x0 + w + 2, ty + 3))
        free = [i for i, b in enumerate(boxes) if not overlaps(b, placed)
                and b[0] >= frame[0] and b[2] <= frame[2] and b[1] >= frame[1] and b[3] <= frame[3]]
        i = free[0] if free else 0
        placed.append(boxes[i])
        out.append(text(spots[i][0], spots[i][1], label, spots[i][2], "label"))
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def tradeoff_chart(results: Mapping[str, Any]) -> str | None:
    """Speedup (log x) against the gap to the oracle (y), one dot per method, the Pareto front marked."""
    key = gap_key(results)
    pts: dict[str, tuple[float, float]] = {}
    rows: dict[str, Model] = {}
    for m in models(results):
        s, g = value(m.metrics, "speedup"), value(m.metrics, key) if key else None
        if m.is_method and s is not None and s > 0 and g is not None:
            pts[m.name], rows[m.name] = (s, g), m
    if not pts or key is None:
        return None
    front = pareto_front(pts)
    original = value(row(results, "original"), key)
    xs, ys = [1.0], [0.0] + ([original] if original is not None else [])
    for name, (s, g) in pts.items():
        xs += [s, *(v for v in interval(rows[name].metrics, "speedup") or () if v > 0)]
        ys += [g, *(interval(rows[name].metrics, key) or ())]
    W, H, left, right, top, bottom = 780.0, 440.0, 70.0, 24.0, 34.0, 52.0
    x = Scale(min(xs) / 1.6, max(xs) * 1.6, left, W - right, log=True)
    positive = [v for v in ys if v > 0]
    # Gaps often span decades (an untouched model ~50 points, good methods < 1): a log axis then keeps the
    # good methods apart instead of piling them on the floor, and the oracle (gap 0) sits on the floor.
    log_y = len(positive) > 1 and max(positive) / min(positive) > 30
    y = (Scale(min(positive) / 1.5, max(positive) * 1.4, H - bottom, top, log=True) if log_y
         else Scale(*padded(ys, 0.1, floor=0.0), H - bottom, top))
    ytitle = GAP_TITLES.get(key, key) + (", log scale" if log_y else "")
    body = axes(x, y, f"speedup = {results.get('speedup_reference') or 'oracle'} time / method time (log scale)",
                ytitle, ylabel_dx=46)
    body.append(text(W - right, 18, "better: faster → and closer to the oracle ↓", "end", "note"))
    if original is not None:
        body += [line(left, y(original), W - right, y(original), "ref"),
                 text(left + 6, y(original) - 5, "original (no unlearning)", "start", "note")]
    body.append(rect(x(1.0) - 5, y(0.0) - 5, 10, 10, "oracle-mark", transform=f"rotate(45 {x(1.0):.1f} {y(0.0):.1f})"))
    oracle_label = "oracle (retrain, gap 0)"
    body.append(text(x(1.0) + 9, y(0.0) - 6, oracle_label, "start", "note"))
    if len(front) > 1:
        body.append(polyline([(x(pts[n][0]), y(pts[n][1])) for n in front], "pareto"))
    obstacles = [(x(1.0) - 8, y(0.0) - 8, x(1.0) + 8, y(0.0) + 8),
                 (x(1.0) + 9, y(0.0) - 16, x(1.0) + 9 + len(oracle_label) * 5.6, y(0.0) - 3)]
    if original is not None:
        obstacles.append((left + 6, y(original) - 15, left + 150, y(original) - 2))
    dots, labels = [], []
    for name, (s, g) in pts.items():
        px, py, m = x(s), y(g), rows[name]
        sci, gci = interval(m.metrics, "speedup"), interval(m.metrics, key)
        if sci and sci[0] > 0:
            dots.append(error_bar(x(sci[0]), py, x(sci[1]), py, stroke=m.colour))
            obstacles.append((x(sci[0]), py - 3, x(sci[1]), py + 3))
        if gci:
            dots.append(error_bar(px, y(gci[0]), px, y(gci[1]), stroke=m.colour))
            obstacles.append((px - 3, y(gci[1]), px + 3, y(gci[0])))
        if name in front:
            dots.append(circle(px, py, 9, "front-ring"))
        tip = f"{name}: speedup {s:.3g}x, {key} {_fmt(g)}" + (" (Pareto front)" if name in front else "")
        dots.append(circle(px, py, 5.5, "dot", tip, fill=m.colour))
        obstacles.append((px - 6, py - 6, px + 6, py + 6))
        labels.append((px, py, name))
    body += dots + place_labels(labels, obstacles, (left, top, W - right, H - bottom))
    body += [line(left + 4, 14, left + 30, 14, "pareto"), circle(left + 17, 14, 6, "front-ring"),
             text(left + 36, 18, "Pareto front: no other method is both faster and closer to the oracle", "start",
                  "note")]
    return svg(W, H, body, "quality versus cost of each unlearning method")


def oracle_band(results: Mapping[str, Any], key: str) -> tuple[float, float, str] | None:
    """Where the retrained models lie on `key`: min–max of the oracle's runs, else its CI."""
    oracle = next((m for m in models(results) if m.name == "oracle"), None)
    if oracle is None:
        return None
    runs = [v for r in oracle.runs if (v := value(r, key)) is not None]
    if len(runs) > 1:
        return min(runs), max(runs), f"oracle runs, min–max (n={len(runs)})"
    ci = interval(oracle.metrics, key)
    return (ci[0], ci[1], "oracle 95 % CI") if ci else None


def metric_chart(results: Mapping[str, Any], key: str) -> str | None:
    """One metric: a dot with its CI per model (original, methods) over the band of the retrained models."""
    shown = [m for m in models(results) if m.name != "oracle" and value(m.metrics, key) is not None]
    if not shown:
        return None
    band = oracle_band(results, key)
    mean = value(row(results, "oracle"), key)
    ys = [value(m.metrics, key) for m in shown] + [v for m in shown for v in interval(m.metrics, key) or ()]
    ys += list(band[:2]) if band else []
    ys += [mean] if mean is not None else []
    fraction = key.startswith(FRACTION_PREFIXES)
    # Wider than the usual four-per-row when many models need a column each.
    H, left, right, top, bottom = 230.0, 48.0, 10.0, 12.0, 74.0
    W = max(270.0, left + right + 26.0 * len(shown))
    y = Scale(*padded(ys, 0.12, floor=0.0, ceil=1.0 if fraction else None), H - bottom, top)
    step = (W - right - left) / len(shown)
    tilt = -40 if step >= 34 else -60
    body = axes((left, W - right), y)
    if band:
        lo, hi = y(band[0]), y(band[1])
        body.append(rect(left, hi - (1.5 if lo - hi < 3 else 0), W - right - left, max(lo - hi, 3), "band",
                         tip=f"{band[2]}: {_fmt(band[0])} to {_fmt(band[1])}"))
    if mean is not None:
        body.append(line(left, y(mean), W - right, y(mean), "oracle-line"))
    for i, m in enumerate(shown):
        px, v = left + step * (i + 0.5), value(m.metrics, key)
        ci = interval(m.metrics, key)
        if ci:
            body.append(error_bar(px, y(ci[0]), px, y(ci[1]), stroke=m.colour))
        tip = f"{m.label}: {_fmt(v)}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
        body.append(circle(px, y(v), 5, "dot", tip, fill=m.colour))
        body.append(text(px + 3, H - bottom + 12, m.label, "end", "tick", rotate=tilt))
    return svg(W, H, body, f"{key} per model against the oracle")


def edge_ticks(edges: Sequence[float | None], most: int = 5) -> list[tuple[float, float]]:
    """(bin position, value) ticks at round values (0 and powers of ten) along histogram edges.

    Bins are drawn at equal widths, whatever their edges, so a round value between two edges is placed by
    interpolating between them (in log space when both are positive, as for log-spaced bins).
    """
    if not edges or any(e is None for e in edges) or any(b < a for a, b in itertools.pairwise(edges)):
        return []  # not a usable axis: draw the bins without tick values
    ticks = [(0.0, edges[0])]
    positive = [e for e in edges if e > 0]
    decades = range(math.ceil(math.log10(positive[0])), math.floor(math.log10(positive[-1])) + 1) if positive else []
    skip = max(1, math.ceil(len(decades) / (most - 1)))
    for d in list(decades)[::-1][::skip][::-1]:  # every `skip`-th decade, counted from the top one
        p = 10.0**d
        i = next(i for i in range(len(edges) - 1) if edges[i] <= p <= edges[i + 1])
        lo, hi = edges[i], edges[i + 1]
        t = (math.log(p / lo) / math.log(hi / lo)) if lo > 0 else (p - lo) / (hi - lo)
        ticks.append((i + t, p))
    return ticks


def histogram_chart(label: str, details: Mapping[str, Any]) -> str | None:
    """Share of forget, test and retain samples per signal bin, as overlaid step lines."""
    edges, hist = details.get("bins"), details.get("hist")
    if not isinstance(edges, list) or not isinstance(hist, Mapping) or len(edges) < 2:
        return None
    n = len(edges) - 1
    shares: dict[str, list[float]] = {}
    for part in ("retain", "test", "forget"):
        counts = hist.get(part)
        if isinstance(counts, list) and len(counts) == n and all(number(c) is not None for c in counts):
            total = sum(counts) or 1
            shares[part] = [c / total for c in counts]
    if "forget" not in shares:
        return None
    W, H, left, right, top, bottom = 270.0, 170.0, 44.0, 10.0, 10.0, 40.0
    top_share = max(max(s) for s in shares.values()) or 1.0
    y = Scale(0.0, top_share * 1.08, H - bottom, top)
    x = Scale(0.0, float(n), left, W - right)
    body = axes((left, W - right), y, y_fmt=lambda v: f"{v:.0%}" if top_share > 0.05 else f"{v:.1%}")
    for pos, tick in edge_ticks([number(e) for e in edges]):
        body.append(text(x(pos), H - bottom + 13, tick_label(tick), "middle", "tick"))
    signal = str(details.get("signal") or "signal")
    title = f"{SIGNAL_TITLES.get(signal, signal)} (log-spaced bins)"
    body.append(text((left + W - right) / 2, H - 6, title, "middle", "axis-title"))
    for part, share in shares.items():
        pts = [(x(0), y(0))]
        for i, s in enumerate(share):
            pts += [(x(i), y(s)), (x(i + 1), y(s))]
        pts.append((x(n), y(0)))
        body.append(polyline(pts, f"hist-{part}"))
    return svg(W, H, body, f"{label}: {signal} of forget versus test samples")
