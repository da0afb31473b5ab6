"""The table `python -m unlearning calibrate` prints: one row per method, gaps default -> calibrated."""

from __future__ import annotations

import math
from typing import Any


def _gap(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _pair(default: float | None, calibrated: float | None) -> str:
    return f"{_gap(default)} -> {_gap(calibrated)}"


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def format_calibration(result: Any, live: dict[str, dict[str, float]] | None, request: str) -> str:
    """Method, trials (done / pruned / failed), chosen settings, then the gap (points) with the default
    setting -> with the calibrated one, on the calibration proxies, the held-out proxy and the live request."""
    header = ["method", "trials", "chosen settings", "proxy gap", "held-out gap", "live gap", "wall s"]
    rows = []
    for m, s in result.searches.items():
        chosen = "defaults" if s.chosen == "defaults" else _values(s.values)
        if s.vetoed:
            chosen += f" (vetoed {_values(s.vetoed['values'])}: held-out {_gap(s.vetoed['heldout_gap'])})"
        lv = (live or {}).get(m) or {}
        rows.append([m, f"{s.trials}/{s.pruned}/{s.failed}", chosen, _pair(s.default_gap, s.gap),
                     _pair(result.heldout[m]["default_gap"], result.heldout[m]["gap"]),
                     _pair(lv.get("default_gap"), lv.get("calibrated_gap")) if lv else "not scored",
                     f"{s.wall_s:.1f}"])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    proxies = result.proxies
    title = (f"calibration for {request}: searched on {', '.join(p['description'] for p in proxies[:-1])}; "
             f"held out {proxies[-1]['description']}\ngap = mean |method - oracle| over forget/retain/test acc "
             "and MIA efficacy (points; regression: W1 to the oracle), default setting -> calibrated; "
             "trials = done/pruned/failed")
    tail = [f"{m}: skipped, {why}" for m, why in result.skipped.items()]
    tail += [s.budget_hint for s in result.searches.values() if s.budget_hint]
    tail.append(f"profile written to {result.path}" if result.path else "profile not written")
    return "\n".join([title, *lines, *tail])
