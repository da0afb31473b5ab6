"""`python -m unlearning`: original, oracle and every configured method, evaluated, as a table and JSON.

Needs no MLflow, Prefect or DVC: this is what runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, load_params


class Progress:
    """One status line per stage on stderr; epochs update in place on a terminal."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()
        self._open = False

    def __call__(self, event: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.start
        stage = event.get("stage", "")
        if "epoch" in event:
            # Every loss the stage reports (loss, or forget_loss / retain_loss, min_loss / max_loss, ...).
            losses = " ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in event.items()
                              if k.endswith("loss") and isinstance(v, int | float))
            msg = f"[{elapsed:6.1f}s] {stage}: epoch {event['epoch']}/{event['epochs']} {losses}".rstrip()
            if self.tty:
                self.stream.write("\r\033[K" + msg)
                self._open = True
                self.stream.flush()
                return
            if event["epoch"] not in (1, event["epochs"]):
                return
        else:
            detail = ", ".join(f"{k}={v}" for k, v in event.items() if k != "stage" and k != "forget_classes")
            msg = f"[{elapsed:6.1f}s] {stage}: {detail}"
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearning", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: params.yaml; built-in defaults when it does not exist)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, value parsed as YAML (e.g. --set unlearn.methods=[finetune])")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    path = args.params if Path(args.params).exists() or args.params != "params.yaml" else None
    try:
        params = load_params(path, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from .experiment import run_experiment
    from .report_table import format_table

    progress = None if args.quiet else Progress()

    def save(results: dict[str, Any]) -> None:
        """Write (partial) results atomically: a run cut short keeps every model evaluated so far."""
        if args.out is None:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
        tmp.replace(args.out)

    try:
        results = run_experiment(params, log=progress, on_update=save)
    except (ValueError, FileNotFoundError) as err:
        if progress:
            progress.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    if progress:
        progress.close()
    print(format_table(results))
    if args.out:
        save(results)
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
