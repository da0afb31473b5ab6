"""Tiny hand-written SVG helpers: scales, ticks, escaped elements and axes.

The library may not import a plotting package, and the report must be one file that a browser opens
offline, so the charts are plain SVG strings built from these few pieces. Styling lives in the page's CSS
(classes), except colours that carry data (a method's colour, a heatmap cell).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SVG_NS = "http://www.w3.org/2000/svg"
CHAR_W = 7.0  # average width of a bold 11.5 px sans-serif character, for label collision checks


def esc(value: object) -> str:
    """Text or attribute value, escaped for HTML and SVG."""
    return html.escape(str(value), quote=True)


def num(value: float) -> str:
    """A coordinate, short: two decimals at most."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def tick_label(value: float) -> str:
    """A tick value, short: `0.25`, `10`, `1e-4`."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        mant, exp = f"{value:.0e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Scale:
    """Maps data [lo, hi] onto pixels [start, end], linearly or on a log10 axis."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        if self.log:
            return (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (value - self.lo) / (self.hi - self.lo)

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)  # out-of-range data sits on the frame, never off the chart
        return self.start + self._t(value) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi, count)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside [lo, hi], with 2 and 5 (or 3) between them when the range spans few decades."""
    decades = range(max(math.floor(math.log10(lo)), -300), min(math.ceil(math.log10(hi)), 300) + 1)
    span = math.log10(hi / lo)
    mults = (1, 2, 5) if span <= 2.6 else (1, 3) if span <= 4 else (1,)
    return [m * 10.0**d for d in decades for m in mults if lo * (1 - 1e-9) <= m * 10.0**d <= hi * (1 + 1e-9)]


def padded(values: Sequence[float], pad: float = 0.08, floor: float | None = None,
           ceil: float | None = None) -> tuple[float, float]:
    """A data range around `values` with a margin, kept inside [floor, ceil]; never empty."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi) * 0.1, 0.05)
    lo, hi = lo - pad * span, hi + pad * span
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    return lo, hi


def mix(colours: Sequence[str], t: float) -> str:
    """A colour at fraction `t` along a ramp of hex colours (`#rrggbb`)."""
    t = min(max(t, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(t), len(colours) - 2)
    a, b = (tuple(int(c[k:k + 2], 16) for k in (1, 3, 5)) for c in colours[i:i + 2])
    f = t - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def svg(width: float, height: float, body: Sequence[str], label: str, cls: str = "chart") -> str:
    """A complete inline `<svg>` element; `label` is what a screen reader announces."""
    return (f'<svg xmlns="{SVG_NS}" class="{cls}" viewBox="0 0 {num(width)} {num(height)}" width="{num(width)}" '
            f'height="{num(height)}" role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>")


def _attrs(cls: str, extra: dict[str, object]) -> str:
    parts = [f'class="{cls}"'] if cls else []
    parts += [f'{k.replace("_", "-")}="{esc(v)}"' for k, v in extra.items() if v is not None]
    return " ".join(parts)


def line(x1: float, y1: float, x2: float, y2: float, cls: str = "", **attrs: object) -> str:
    return f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" {_attrs(cls, attrs)}/>'


def rect(x: float, y: float, w: float, h: float, cls: str = "", tip: str | None = None, **attrs: object) -> str:
    inner = f"<title>{esc(tip)}</title>" if tip else ""
    return (f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(w, 0))}" height="{num(max(h, 0))}" '
            f'{_attrs(cls, attrs)}>{inner}</rect>')


def circle(x: float, y: float, r: float, cls: str = "", tip: str | None = None, **attrs: object) -> str:
    inner = f"<title>{esc(tip)}</title>" if tip else ""
    return f'<circle cx="{num(x)}" cy="{num(y)}" r="{num(r)}" {_attrs(cls, attrs)}>{inner}</circle>'


def polyline(points: Sequence[tuple[float, float]], cls: str = "", **attrs: object) -> str:
    pts = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    return f'<polyline points="{pts}" {_attrs(cls, attrs)}/>'


def text(x: float, y: float, content: object, anchor: str = "start", cls: str = "", rotate: float | None = None,
         **attrs: object) -> str:
    turn = f' transform="rotate({num(rotate)} {num(x)} {num(y)})"' if rotate else ""
    return (f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{turn} {_attrs(cls, attrs)}>'
            f"{esc(content)}</text>")


def error_bar(x1: float, y1: float, x2: float, y2: float, cap: float = 3.0, **attrs: object) -> str:
    """A whisker from (x1, y1) to (x2, y2) with caps across its ends (horizontal or vertical)."""
    if x1 == x2:
        ends = [line(x1 - cap, y, x1 + cap, y, "whisker", **attrs) for y in (y1, y2)]
    else:
        ends = [line(x, y1 - cap, x, y1 + cap, "whisker", **attrs) for x in (x1, x2)]
    return line(x1, y1, x2, y2, "whisker", **attrs) + "".join(ends)


def axes(x: Scale | tuple[float, float], y: Scale, xlabel: str = "", ylabel: str = "",
         y_fmt: Callable[[float], str] = tick_label, ylabel_dx: float = 40) -> list[str]:
    """Grid lines, ticks and axis titles. `x` as a (left, right) pixel span: a categorical axis whose labels
    the caller draws."""
    left, right = (x.start, x.end) if isinstance(x, Scale) else x
    out: list[str] = []
    for v in y.ticks():
        out += [line(left, y(v), right, y(v), "grid"), text(left - 6, y(v) + 3.5, y_fmt(v), "end", "tick")]
    if isinstance(x, Scale):
        for v in x.ticks():
            out += [line(x(v), y.start, x(v), y.end, "grid"), text(x(v), y.start + 15, tick_label(v), "middle", "tick")]
        out.append(text((left + right) / 2, y.start + 32, xlabel, "middle", "axis-title"))
    out += [line(left, y.start, right, y.start, "axis"), line(left, y.start, left, y.end, "axis")]
    if ylabel:
        out.append(text(left - ylabel_dx, (y.start + y.end) / 2, ylabel, "middle", "axis-title", rotate=-90))
    return out


def overlaps(box: tuple[float, float, float, float], others: Sequence[tuple[float, float, float, float]]) -> bool:
    """Whether an (x0, y0, x1, y1) box meets any of `others`."""
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in others)
