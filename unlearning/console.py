"""One console layer for progress output: rich bars on a terminal, throttled plain lines elsewhere.

The library reports progress as event dicts through an optional `log` callback, such as
`{"stage": "salun", "epoch": 3, "epochs": 30, "forget_loss": 2.31}` or `{"stage": "unlearn", "seed": 0}`;
`python -m unlearning` and the `unlearn run` pipeline both print them through a `Console`. rich is imported
only once a bar is drawn: the library still runs without it, and logs and CI get plain, greppable lines.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, TextIO

Event = dict[str, Any]
LogFn = Callable[[Event], None]


def estimate_eta(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the average rate so far, timed from the first event rather than from a start
    before it, so that set-up and warm-up are not charged to every step.

    Args:
        done: steps finished since the clock started; 0 at the first event, where no rate is known yet.
        total: steps in all, counted from the same start.
        elapsed: seconds since the clock started.

    Returns:
        The estimate in seconds (0 once done reaches total), or None while no step has been timed.
    """
    if done <= 0 or elapsed < 0:
        return None
    return max(total - done, 0) * elapsed / done


def format_duration(seconds: float | None) -> str:
    """Short human duration: `8s`, `1m10s`, `1h02m`; `?` when unknown.

    Args:
        seconds: the duration, or None when it is unknown.

    Returns:
        The formatted duration.
    """
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _value(value: Any, digits: int = 3) -> str:
    """One event value, short: floats to `digits` significant digits (whole numbers when larger), long lists cut."""
    if isinstance(value, bool | str | numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):  # also numpy floats
        x = float(value)
        return f"{x:.0f}" if math.isfinite(x) and abs(x) >= 10**digits else f"{x:.{digits}g}"
    if isinstance(value, list | tuple):
        shown = value if len(value) <= 4 else value[:3]
        text = ", ".join(_value(v, digits) for v in shown)
        return f"[{text}]" if len(shown) == len(value) else f"[{text}, ... +{len(value) - 3}]"
    return str(value)


def _losses(event: Event) -> str:
    """Every `*loss` the event reports, as `forget loss 2.31`; absent or None losses are left out, not nan."""
    return " ".join(f"{k.replace('_', ' ')} {_value(v, 4)}" for k, v in event.items()
                    if k.endswith("loss") and v is not None)


def _describe(event: Event) -> str:
    """A non-epoch event as `stage: k=v, ...`; None values are left out."""
    detail = ", ".join(f"{k}={_value(v)}" for k, v in event.items() if k != "stage" and v is not None)
    stage = str(event.get("stage", ""))
    return f"{stage}: {detail}" if stage and detail else stage or detail


def _want_live(stream: TextIO) -> bool:
    """Auto mode: bars only on an interactive terminal, never in CI or when plain output is asked for."""
    if os.environ.get("CI") or os.environ.get("UNLEARNING_PLAIN"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


@dataclass
class _Track:
    """A counter with its own clock, started at its first event (see `estimate_eta`): a stage or the plan."""

    name: str
    start: float
    first: int
    total: int | None
    done: int
    printed: float = -math.inf
    task: Any = None  # the rich task id in live mode

    def eta(self, now: float) -> str:
        if self.total is None:
            return "?"
        return format_duration(estimate_eta(self.done - self.first, self.total - self.first, now - self.start))


class Console:
    """Progress output for the runner and the pipeline; safe to call from several threads.

    Live mode draws a rich bar per running stage and prints other events above the bars. Plain mode writes
    `[  12.3s] label stage: ...` lines; epochs at most one per `every_s` per stage, plus the first and the
    last. Use it as a context manager, or call `close()`, so that a live display gives the terminal back.

    Args:
        stream: where to write; sys.stderr by default, so stdout stays free for results.
        live: True for bars, False for plain lines, None to decide: bars when rich is importable, the
            stream is a terminal and neither `CI` nor `UNLEARNING_PLAIN` is set. Without rich, plain.
        clock: monotonic seconds; tests pass a fake one.
    """

    every_s: float = 2.0

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        # find_spec locates rich without importing it (and honours a `sys.modules['rich'] = None` block).
        self.live = (_want_live(self.stream) if live is None else live) and find_spec("rich") is not None
        self._t0 = clock()
        self._lock = threading.RLock()
        self._runs: dict[tuple[str | None, str], _Track] = {}
        self._plan: _Track | None = None
        self._bars: Any = None  # rich.progress.Progress, started when the first bar is drawn

    def log_fn(self, label: str | None = None) -> LogFn:
        """An event callback for the library's `log=` argument.

        Args:
            label: prefix for this caller's lines, e.g. `unlearn[salun]`, so parallel stages stay apart.

        Returns:
            A thread-safe function that takes one event dict.
        """
        return lambda event: self._event(event, label)

    def say(self, message: str, label: str | None = None) -> None:
        """Print one free-form line.

        Args:
            message: the text.
            label: optional prefix, as in `log_fn`.
        """
        with self._lock:
            self._print(f"{label}: {message}" if label else message)

    def plan(self, total: int, description: str) -> None:
        """Start the overall bar: `total` steps (e.g. original, oracle, methods x seeds), timed from now.

        Args:
            total: number of steps.
            description: what a step is, e.g. `stages`.
        """
        with self._lock:
            self._remove(self._plan)
            self._plan = _Track(description, self.clock(), 0, total, 0)
            if self.live:
                self._plan.task = self._progress().add_task(description, total=total, eta="?", info="")

    def advance(self, n: int = 1) -> None:
        """Count `n` finished steps of the plan; without a plan, nothing happens.

        Args:
            n: steps just finished.
        """
        with self._lock:
            p = self._plan
            if p is None:
                return
            p.done += n
            if self.live and p.task is not None:
                self._progress().update(p.task, completed=p.done, eta=p.eta(self.clock()))
            else:
                self._print(f"{p.done}/{p.total} {p.name} done, ETA {p.eta(self.clock())}")

    def close(self) -> None:
        """Stop the live display; later output, even from other threads, goes out as plain lines."""
        with self._lock:
            self.live = False
            if self._bars is not None:
                self._bars.stop()
                self._bars = None

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _event(self, event: Event, label: str | None) -> None:
        with self._lock:
            if "epoch" in event:
                self._epoch(event, label)
            else:
                self._print(f"{label} {_describe(event)}" if label else _describe(event))

    def _epoch(self, event: Event, label: str | None) -> None:
        now = self.clock()
        stage, epoch, total = str(event.get("stage", "")), int(event["epoch"]), event.get("epochs")
        key = (label, stage)
        old = self._runs.get(key)
        run = old if old is not None and epoch > old.done else None  # a counter going back: a new run
        first = run is None
        if run is None:
            self._remove(old)
            run = self._runs[key] = _Track(f"{label} {stage}" if label else stage, now, epoch, total, epoch)
        run.done = epoch
        last = total is not None and epoch >= total
        if self.live:
            if run.task is None:
                run.task = self._progress().add_task(run.name, total=total, eta="?", info="")
            self._progress().update(run.task, completed=epoch, eta=run.eta(now), info=_losses(event))
            if not last:
                return
            self._remove(run)  # a finished stage stays as one line above the bars
        elif not (first or last or now - run.printed >= self.every_s):
            return
        run.printed = now
        of = "?" if total is None else total
        self._print(f"{run.name}: epoch {epoch}/{of} (ETA {run.eta(now)}) {_losses(event)}".rstrip())
        if last:
            del self._runs[key]

    def _remove(self, track: _Track | None) -> None:
        if track is not None and track.task is not None and self._bars is not None:
            self._bars.remove_task(track.task)
            track.task = None

    def _progress(self) -> Any:
        """The rich Progress, started on first use: a Console that draws no bar never touches the terminal."""
        if self._bars is None:
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # markup=False: labels such as `unlearn[salun]` are text, not rich style tags.
            self._bars = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(bar_width=30), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}", markup=False),
                TextColumn("{task.fields[info]}", markup=False),
                console=RichConsole(file=self.stream, force_terminal=True), get_time=self.clock,
                # Only the stream we draw on goes through rich: `> results.txt` must still get stdout.
                redirect_stdout=self.stream is sys.stdout, redirect_stderr=self.stream is sys.stderr)
            self._bars.start()
        return self._bars

    def _print(self, text: str) -> None:
        line = f"[{self.clock() - self._t0:6.1f}s] {text}"
        if self._bars is not None:  # above the live bars
            self._bars.console.print(line, markup=False, highlight=False)
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (ValueError, OSError):  # a closed or broken stream: progress output must never end a run
            pass
