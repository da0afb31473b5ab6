"""`python -m unlearning calibrate`: tune methods on proxy requests, write the profile, report the gaps.

Needs optuna (nothing else beyond the library). The search never sees the live request's forget samples;
afterwards, unless --no-live, the frozen result is scored on the live request against its oracle, so the
table shows how the proxies' choice generalises: to a held-out proxy and to the live request.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m unlearning calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: params.yaml; built-in defaults when it does not exist)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. --set calibration.trials=10 --set calibration.budget_s=60")
    parser.add_argument("--methods", default=None, metavar="M1,M2",
                        help="methods to calibrate (default: calibration.methods, else unlearn.methods, "
                             "skipping those without a search space)")
    parser.add_argument("--exclude", type=Path, action="append", default=[], metavar="IDS_FILE",
                        help="sample ids of another (pending or done) request that proxies must avoid; repeatable")
    parser.add_argument("--no-live", action="store_true",
                        help="do not score the result on the live request (saves training its original and oracle)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from ..console import Console

    console = Console(io.StringIO() if args.quiet else None)
    try:
        return _run(args, console)
    except (ValueError, ImportError, FileNotFoundError) as err:
        console.close()
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, console: Any) -> int:
    from ..params import load_params

    path = args.params if Path(args.params).exists() or args.params != "params.yaml" else None
    console.say(f"python -m unlearning calibrate: loading {path or 'defaults'} ...")
    params = load_params(path, args.overrides)
    from ..calibration.search import require_optuna

    require_optuna()
    from ..requests import read_ids_file

    excluded = [read_ids_file(p) for p in args.exclude]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    from ..calibration.core import calibrate
    from ..calibration.live import score_live
    from ..calibration.profile import data_version
    from ..steps import load_split, train_oracle, train_original
    from .calibrate_table import format_calibration

    split = load_split(params)
    console.say(f"live request: {split.description} ({len(split.forget_idx)} samples); searching on proxies only")
    result = calibrate(params, split, data_version=data_version(split), methods=methods, excluded=excluded,
                       log=console.log_fn())
    live = None
    if not args.no_live:  # after the search is frozen: the report's generalisation column
        console.say("scoring the frozen result on the live request (original and oracle trained now)")
        original, _ = train_original(params, split)
        oracle, _ = train_oracle(params, split)
        live = score_live(result, params, split, original, oracle)
    console.close()
    print(format_calibration(result, live, split.description))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {"profile": str(result.path), "proxies": result.proxies, "skipped": result.skipped,
               "methods": {m: {**s.as_dict(), "heldout": result.heldout[m], "live": (live or {}).get(m),
                               "trials_log": s.log} for m, s in result.searches.items()}}
        args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"results written to {args.out}")
    return 0
