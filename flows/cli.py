"""`unlearn`: run the pipeline, take deletion requests, serve on a schedule, move production by hand.

    unlearn run                      the whole pipeline once (no server needed)
    unlearn request --ids 1,2,3      record a deletion request (also --ids-file FILE, --classes 3)
    unlearn serve --cron "0 2 * * *" a Prefect deployment on that schedule (starts a local server if needed)
    unlearn promote VERSION          put a registered version in production (previous one keeps `previous`)
    unlearn rollback                 put the previous production version back
    unlearn methods                  the unlearning methods, with the data each one touches
    unlearn status                   pending requests, the production version and its lineage
    unlearn calibrate                tune the methods' key settings on proxy requests (a profile runs use)

Heavy imports (torch, mlflow, prefect, dvc) happen inside the commands, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import NoReturn


def _common(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    p.add_argument("--root", type=Path, default=Path("."), help="project folder (default: current directory)")
    p.add_argument("--params", default="params.yaml", help="params file relative to --root (default: params.yaml)")
    if overrides:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param, value parsed as YAML (e.g. --set unlearn.methods=[finetune]); "
                            "the run is tracked in MLflow but not recorded in dvc.lock")


def _params(args):
    from .settings import load

    # Commands that never run a method check its settings by name only: they answer without torch.
    params = load(args.root.resolve(), args.params, getattr(args, "overrides", []),
                  methods=args.command not in ("status", "promote", "rollback"))
    if args.command in ("status", "promote", "rollback", "request"):  # `run` checks this and more (preflight)
        from .preflight import check_tracking

        check_tracking(args.root.resolve(), params)  # a bogus, corrupt or locked store: one line, nothing created
    return params


def _dataset(params):
    from unlearning.datasets import load_dataset

    return load_dataset(params.data.name, params.data.root, params.data.download, **params.data.options())


def cmd_run(args) -> int:
    from . import plot_worker
    from .fast_path import skip_run
    from .preflight import check_run, ensure_store
    from .recovery import held_run
    from .runner import is_dask
    from .settings import tracking_uri
    from .temp_server import temporary_server

    root = args.root.resolve()
    if skip_run(root, args.params, args.overrides, args.force):  # nothing changed: one line, no flow started
        return 0
    with temporary_server() as server:  # Prefect's server boots meanwhile; bad input stops it unwaited
        params = _params(args)
        pending = check_run(root, params, _dataset(params), create_store=False)  # every check, nothing created
        if pending:
            print(f"processing {len(pending)} pending deletion request(s): {len({i for r in pending for i in r['ids']})}"
                  f" sample ids ({', '.join(r['hash'] for r in pending)})", file=sys.stderr)
        t0 = time.perf_counter()
        with held_run(root, params, wait=args.wait, tie=False):  # a second run is refused here, at once
            ensure_store(tracking_uri(root, params))
            from .pipeline import print_summary, unlearning_pipeline

            with server.serving(), plot_worker.running(enabled=not is_dask(params)):  # off this GIL
                out = unlearning_pipeline(root=str(root), params_path=args.params, overrides=args.overrides,
                                          wait=args.wait)
    print_summary(root, params, out, time.perf_counter() - t0)
    return 0


def cmd_request(args) -> int:
    from . import deletions
    from .ledger import Ledger
    from .preflight import inside
    from .production import who

    root = args.root.resolve()
    params = _params(args)
    if args.cancel is not None:
        from .locks import hold

        with hold(root, params, f"unlearn request --cancel {args.cancel}"):  # not while a run processes it
            req = deletions.cancel(Ledger(root, params), args.cancel, by=who())
        print(f"deletion request {req['hash']} is cancelled (it will not be processed)")
        return 0
    # The file must lie in the project (after symlinks): a request must not read, nor echo, any other file.
    ids_file = os.path.relpath(inside(args.ids_file, root, "--ids-file")) if args.ids_file is not None else None
    ids = deletions.parse_ids(args.ids) if args.ids is not None else None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    if classes is not None and not classes:
        raise deletions.RequestError("--classes: names no class: empty forget set")
    dataset = _dataset(params)
    req, created = deletions.create(Ledger(root, params), dataset, ids=ids, ids_file=ids_file, classes=classes)
    what = f"{req['n_ids']} sample ids" if req.get("n_ids") is not None else req["kind"]
    if created:
        print(f"recorded deletion request {req['hash']} ({what}) in the ledger of the tracking store; "
              f"pending until the next `unlearn run` or scheduled run (withdraw: unlearn request --cancel {req['hash']})")
    else:
        print(f"deletion request {req['hash']} already recorded (status: {req['status']})")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    _params(args)  # fail on a bad params file before starting anything
    serve(args.root.resolve(), args.cron, params_path=args.params, overrides=args.overrides, name=args.name,
          port=args.port)
    return 0


def cmd_promote(args) -> int:
    from unlearning.params import ConfigError

    from .locks import hold
    from .production import promote_version

    if not args.version.removeprefix("v").isdigit():
        raise ConfigError(f"VERSION must be a version number such as 7; got {args.version!r}")
    if args.force and not (args.reason or "").strip():
        raise ConfigError("--force needs --reason TEXT (recorded on the version, with who forced it)")
    root, params = args.root.resolve(), _params(args)
    with hold(root, params, f"unlearn promote {args.version}", wait=args.wait):
        print(promote_version(root, params, args.version, force=args.force, reason=args.reason))
    return 0


def cmd_rollback(args) -> int:
    from .locks import hold
    from .production import rollback

    root, params = args.root.resolve(), _params(args)
    with hold(root, params, "unlearn rollback", wait=args.wait):
        print(rollback(root, params))
    return 0


def cmd_methods(args) -> int:
    from unlearning.catalog import method_catalogue

    rows = method_catalogue()  # from the sources: no torch import, so this answers at once
    width = max(len(r["name"]) for r in rows)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(
        f"{r['name']:<{width}}  touches {','.join(r['needs']):<22} {r['summary']}"
        + "".join(f" [weak on {s} requests: {why}]" for s, why in r["weak_on"].items()) for r in rows))
    return 0


def cmd_status(args) -> int:
    from .status import render, status_report

    report = status_report(args.root.resolve(), _params(args))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def version() -> str:
    """The installed package's version (the project's `pyproject.toml` version)."""
    try:
        return metadata.version("unlearning-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (`error: ...`, exit 2), like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


WAIT_HELP = "wait for another run, promote or rollback of this project or model to finish (default: refuse)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="unlearn", description=__doc__.splitlines()[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="\n".join(__doc__.splitlines()[2:11]))
    parser.add_argument("--version", action="version", version=f"unlearn {version()}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="print the traceback of an error (also after the command: unlearn run --debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline once (pending deletion requests first)",
                       description="Run version_data -> train_base / retrain_oracle -> unlearn[m] -> evaluate[m] -> "
                                   "register_and_promote once, on Prefect's temporary local server.")
    _common(p)
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.add_argument("--force", action="store_true", help="run the flow even when nothing changed (flows.fast_path)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("request", help="record a deletion request (pending until the next run)",
                       description="Validate and record a deletion request in the ledger of the tracking store "
                                   "(shared by every clone using it). Sample ids are indices in the training set "
                                   "of params' dataset.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ids", help="comma-separated sample ids, e.g. 1,2,3")
    g.add_argument("--ids-file", help="file of sample ids (one per line or comma/space separated; # comments)")
    g.add_argument("--classes", help="comma-separated classes (index or name), e.g. 3")
    g.add_argument("--cancel", metavar="HASH", help="withdraw a pending or refused request (a done one stays done)")
    _common(p, overrides=False)
    p.set_defaults(fn=cmd_request)

    p = sub.add_parser("serve", help="serve the pipeline as a Prefect deployment on a cron schedule",
                       description="Serve the pipeline on a schedule against the Prefect server at "
                                   "PREFECT_API_URL, or one started on 127.0.0.1 with its database in the "
                                   "project's .prefect/ (stopped on exit).")
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (02:00 every day)')
    p.add_argument("--name", default="scheduled", help="deployment name (default: scheduled)")
    p.add_argument("--port", type=int, default=None, help="port of the server started here (default: a free one)")
    _common(p)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("promote", help="put a registered model version in production",
                       description="Move the production alias to VERSION; the replaced version keeps 'previous'.")
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--force", action="store_true", help="promote a version that did not pass its gates "
                   "(never one that violates a done deletion request); needs --reason")
    p.add_argument("--reason", help="why --force was needed (recorded on the version with who forced it)")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    _common(p, overrides=False)
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("rollback", help="put the previous production version back",
                       description="Move production back to the version that held it before.")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    _common(p, overrides=False)
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("methods", help="list the unlearning methods and the data each touches",
                       description="One line per registered method: name, data it touches, summary.")
    p.add_argument("--json", action="store_true", help="print a JSON list (name, summary, needs, scenarios, tasks)")
    p.set_defaults(fn=cmd_methods)

    p = sub.add_parser("status", help="pending requests, production version and its lineage",
                       description="Pending / refused deletion requests; the production version with its tags "
                                   "and lineage (base versions back to a trained model).")
    p.add_argument("--json", action="store_true", help="print the same as one JSON object")
    _common(p, overrides=False)
    p.set_defaults(fn=cmd_status)
    from .calibrate_cli import add_command  # its flow (and Prefect) are imported when it runs
    add_command(sub, _common, WAIT_HELP)
    for command in sub.choices.values():  # --debug after the command too; SUPPRESS keeps a --debug given before
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("UNLEARN_DEBUG", "") not in ("", "0")
    from .settings import quiet_env

    if args.command in ("run", "calibrate") and not debug:
        # A stage that fails inside the flow is reported once, as the one `error:` line below; Prefect would
        # log it again with a traceback and a line per dependent task (`--debug` keeps them).
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    quiet_env()
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `unlearn methods | head`: the reader left early, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI's one error format: `error: ...`, exit 2 or 1
        from .preflight import error_line

        if debug:
            traceback.print_exc()
        code, line = error_line(err)
        print(f"error: {line}", file=sys.stderr)
        return code


def entry() -> NoReturn:
    """The `unlearn` command (and `python -m flows.cli`): `main`, then `process_exit.exit_now`."""
    from .process_exit import exit_now

    exit_now(main())


if __name__ == "__main__":
    entry()
