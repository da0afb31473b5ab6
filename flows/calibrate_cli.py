"""`unlearn calibrate [--methods m1,m2]`: the command that runs the flow `unlearning_calibrate`.

Kept apart from `flows.cli` (and from the flow, which imports Prefect) so `unlearn --help` stays instant.
Bad input (no data version yet, optuna missing, a method without a search space) is one line before the
flow, its server or any MLflow run starts.
"""

from __future__ import annotations

import sys
from typing import Any


def cmd_calibrate(args: Any) -> int:
    from .calibrate import check_calibrate
    from .preflight import check_orchestration, check_tracking
    from .profiles import rooted
    from .settings import load
    from .temp_server import temporary_server

    root = args.root.resolve()
    params = load(root, args.params, args.overrides)
    check_orchestration(root, params, check_tracking(root, params))  # on Dask: a DVC project, a remote
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.methods is not None and not methods:
        raise ValueError("--methods names no method")
    check_calibrate(root, rooted(params, root), methods)
    from .locks import hold

    print(f"calibrating {', '.join(methods) if methods else 'the methods of calibration.methods / unlearn.methods'}"
          f" (at most {params.calibration.trials} trials and {params.calibration.budget_s:.0f} s each) ...",
          file=sys.stderr)
    with hold(root, params, "unlearn calibrate", wait=args.wait), temporary_server() as server:  # flows.temp_server
        from .calibrate_flow import unlearning_calibrate

        with server.serving():
            out = unlearning_calibrate(root=str(root), params_path=args.params, overrides=args.overrides,
                                       methods=methods, wait=args.wait)
    for method, values in out["values"].items():
        gaps = out["heldout"][method]
        vetoed = (f"; the search's choice was vetoed, held-out gap {gaps['vetoed_gap']}"
                  if gaps.get("vetoed_gap") is not None else "")
        print(f"{method}: {values or 'defaults kept'}; held-out proxy gap {gaps['gap']} "
              f"(defaults {gaps['default_gap']}){vetoed}")
    for method, why in out["skipped"].items():
        print(f"{method}: skipped ({why})")
    for hint in out.get("budget_hints", []):
        print(hint)
    print(f"profile: {out['profile']} (runs of this data version, model, recipe and request kind use it; "
          f"params.yaml and --set win); MLflow run {out['run_id']}")
    return 0


def add_command(sub: Any, common: Any, wait_help: str) -> None:
    """Register `calibrate` on the CLI's subparsers (`common` adds --root, --params, --set)."""
    p = sub.add_parser("calibrate", help="tune the methods' key settings on proxy requests (a profile runs use)",
                       description="Search each method's key hyperparameters on proxy requests drawn from the "
                                   "data this run keeps (never the live forget set, never another deletion "
                                   "request's samples) and write the calibration profile that `unlearn run` "
                                   "uses for this data version, model, recipe and request kind.")
    p.add_argument("--methods", help="comma-separated methods (default: calibration.methods, else unlearn.methods, "
                                     "skipping methods without a search space)")
    p.add_argument("--wait", action="store_true", help=wait_help)
    common(p)
    p.set_defaults(fn=cmd_calibrate)
