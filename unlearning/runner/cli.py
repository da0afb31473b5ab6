"""`python -m unlearning`: original, oracle and every configured method, evaluated, as a table and JSON.

`python -m unlearning calibrate ...` tunes the methods on proxy requests instead (`calibrate_cli`).

Needs no MLflow, Prefect or DVC: this is what runs on a bare GPU machine. Torch and the methods are
imported after the first line of output, so the command answers at once.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calibrate"]:  # `python -m unlearning calibrate ...`: its own arguments
        from .calibrate_cli import main as calibrate_main

        return calibrate_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m unlearning", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: params.yaml; built-in defaults when it does not exist)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, value parsed as YAML (e.g. --set unlearn.methods=[finetune])")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="write a self-contained HTML report of the results here")
    parser.add_argument("--from-json", type=Path, default=None, metavar="RESULTS",
                        help="with --report: render this results JSON (from --out) instead of running anything")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        return _report_from_json(args.from_json, args.report)
    from ..console import Console

    console = Console(io.StringIO() if args.quiet else None)
    # A missing params.yaml means the built-in defaults; any other missing file is an error (load_params says so).
    path = args.params if Path(args.params).exists() or args.params != "params.yaml" else None
    console.say(f"python -m unlearning: loading {path or 'defaults'} ...")
    from ..params import ConfigError, load_params

    try:
        params = load_params(path, args.overrides)
    except ConfigError as err:
        console.close()
        print(f"error: {err}", file=sys.stderr)
        return 2

    from .experiment import run_experiment, stage_count
    from .table import format_table

    console.plan(stage_count(params), "models trained or unlearned")

    def save(results: dict[str, Any]) -> None:
        """Write (partial) results atomically: a run cut short keeps every model evaluated so far."""
        if args.out is None:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
        tmp.replace(args.out)

    try:
        results = run_experiment(params, log=console.log_fn(), on_update=save, on_step=console.advance)
    except (ValueError, FileNotFoundError) as err:
        console.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    console.close()
    print(format_table(results))
    if args.out:
        save(results)
        print(f"results written to {args.out}")
    if args.report:
        from ..report import write_report

        print(f"report written to {write_report(_jsonable(results), args.report)}")
    return 0


def _report_from_json(source: Path, report: Path | None) -> int:
    """`--report FILE --from-json RESULTS`: render saved results; trains nothing and does not load torch."""
    if report is None:
        print("error: --from-json renders a report: add --report FILE", file=sys.stderr)
        return 2
    try:
        results = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read results from {source}: {err}", file=sys.stderr)
        return 2
    if not isinstance(results, dict):
        print(f"error: {source} holds {type(results).__name__}, not a results object", file=sys.stderr)
        return 2
    from ..report import write_report

    print(f"report written to {write_report(results, report)}")
    return 0
