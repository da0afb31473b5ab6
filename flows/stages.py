"""The pipeline's stages by name, and the one command line that `dvc repro` runs for each of them.

`python -m flows.stages <stage>` is every stage command in dvc.yaml (a per-method or per-seed stage takes
its method and seed from DVC's `DVC_STAGE`, never from the command line); the Prefect flow
(`flows.pipeline`) calls the same functions through `run_stage`, so the code of a stage exists once:

    version_data          flows.version_data.version_data(ctx)      -> SplitRecord
    train_base            flows.train.train_base(ctx)               -> ModelRecord
    retrain_oracle        flows.train.retrain_oracle(ctx)           -> ModelRecord
    unlearn@<method>      flows.unlearn.unlearn(ctx, method)        -> UnlearnRecord
    unlearn_seed@<m>-<s>  flows.unlearn_seed.unlearn_seed(ctx, m, s) -> SeedRecord (one per evaluate.more_seeds)
    evaluate@<method>     flows.evaluate.evaluate(ctx, method)      -> EvalRecord
    register_and_promote  flows.promote.register_and_promote(ctx)   -> PromotionRecord
    calibrate             flows.calibrate.calibrate(ctx)            -> CalibrationRecord (frozen in dvc.yaml;
                          `unlearn calibrate` runs it, outside the pipeline)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .calibrate import CalibrationRecord, calibrate, kind_text
from .context import StageContext
from .evaluate import evaluate
from .promote import register_and_promote
from .records import ModelRecord, PromotionRecord, Record, SeedRecord, SplitRecord, UnlearnRecord
from .train import retrain_oracle, train_base
from .unlearn import unlearn
from .unlearn_seed import unlearn_seed
from .version_data import version_data

STAGES: dict[str, Callable[..., Record]] = {
    "version_data": version_data, "train_base": train_base, "retrain_oracle": retrain_oracle,
    "unlearn": unlearn, "unlearn_seed": unlearn_seed, "evaluate": evaluate,
    "register_and_promote": register_and_promote, "calibrate": calibrate,
}
PER_METHOD = frozenset({"unlearn", "unlearn_seed", "evaluate"})
PER_SEED = frozenset({"unlearn_seed"})  # one stage per (method, seed of evaluate.more_seeds)


def member(method: str | None, seed: int | None = None) -> str | None:
    """What follows `@` in a stage's dvc.yaml name: `salun`, or `salun-1` (DVC's `matrix` key) with a seed."""
    return method if seed is None else f"{method}-{seed}"


def address(stage: str, method: str | None = None, seed: int | None = None) -> str:
    """The stage's name in dvc.yaml: `unlearn@salun` per method, `unlearn_seed@salun-1` per seed."""
    return f"{stage}@{member(method, seed)}" if method else stage


def label(stage: str, method: str | None = None, seed: int | None = None) -> str:
    """The stage's name for people and Prefect: `unlearn[salun]`, `unlearn[salun/seed-1]`."""
    if seed is not None:
        return f"{stage.removesuffix('_seed')}[{method}/seed-{seed}]"
    return f"{stage}[{method}]" if method else stage


def run_stage(ctx: StageContext, stage: str, method: str | None = None, seed: int | None = None) -> Record:
    """Run one stage function; a per-method stage needs `method` (and a per-seed one `seed`), others refuse."""
    if stage not in STAGES:
        raise ValueError(f"'stage' must be one of {sorted(STAGES)}; got {stage!r}")
    if (stage in PER_METHOD) != (method is not None):
        raise ValueError(f"stage {stage!r} " + ("needs a method" if stage in PER_METHOD else "takes no method"))
    if (stage in PER_SEED) != (seed is not None):
        raise ValueError(f"stage {stage!r} " + ("needs a seed" if stage in PER_SEED else "takes no seed"))
    if method is not None:
        if method not in ctx.params.unlearn.methods:
            raise ValueError(f"method {method!r} is not in unlearn.methods {ctx.params.unlearn.methods}")
        return STAGES[stage](ctx, method, *([] if seed is None else [seed]))
    return STAGES[stage](ctx)


def summary(record: Record) -> str:
    """One line saying what a stage produced."""
    if isinstance(record, SplitRecord):
        sm = record.summary
        return (f"data {record.data_hash[:12]}, forget {record.description} ({record.source}): "
                f"{sm['forget']} forget / {sm['retain']} retain, request {record.request_hash}")
    if isinstance(record, ModelRecord):
        return f"skipped ({record.reason})" if record.skipped else f"{record.registered_model} v{record.version}"
    if isinstance(record, UnlearnRecord):
        if record.skipped:
            return f"skipped: {record.reason}"
        return (f"{record.registered_model} v{record.version} in {record.time_s:.2f} s, "
                f"touched {','.join(record.touched) or 'none'}")
    if isinstance(record, PromotionRecord):
        return record.message
    if isinstance(record, CalibrationRecord):
        return (f"profile {record.profile} ({kind_text(record.request_kind)}): "
                + "; ".join(f"{m} {v or 'defaults'}" for m, v in record.values.items()))
    if isinstance(record, SeedRecord) and not record.skipped:
        return f"seed {record.seed} in {record.time_s:.2f} s (not registered)"
    return "skipped (method skipped)" if getattr(record, "skipped", False) else "done"


METHOD_NAME = re.compile(r"[a-z0-9_]+")
SEEDED = re.compile(r"(?P<method>[a-z0-9_]+)-(?P<seed>-?[0-9]+)")  # `salun-1`: DVC's matrix key


def stage_target(stage: str, method: str | None, seed: int | None, params: Any) -> tuple[str | None, int | None]:
    """The method (and seed) of a per-method (per-seed) stage: the arguments, else DVC's `DVC_STAGE`
    (`unlearn@salun`, `unlearn_seed@salun-1`), validated.

    dvc.yaml's commands carry no method name (a name pasted into a shell command is a shell injection):
    DVC exports the stage address in `DVC_STAGE`. The name must be `[a-z0-9_]+`, a registered method and
    listed in `unlearn.methods`, a seed one of `evaluate.more_seeds`; anything else raises `ValueError`
    before the stage starts.
    """
    if stage not in PER_METHOD:
        if method is not None or seed is not None:
            raise ValueError(f"stage {stage!r} takes no method")
        return None, None
    if method is None:
        address_ = os.environ.get("DVC_STAGE", "").rsplit(":", 1)[-1]  # `sub/dvc.yaml:unlearn@m` elsewhere
        name, _, method = address_.partition("@")
        if name != stage or not method:
            raise ValueError(f"stage {stage!r} needs a method: give it, or run it as `dvc repro {stage}@<method>` "
                             f"(DVC_STAGE is {os.environ.get('DVC_STAGE', 'unset')!r})")
        seeded = SEEDED.fullmatch(method) if stage in PER_SEED else None
        if seeded:
            method, seed = seeded["method"], int(seeded["seed"])
    from unlearning.methods import METHODS

    if not METHOD_NAME.fullmatch(method) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {METHODS.names()}")
    if method not in params.unlearn.methods:
        raise ValueError(f"method {method!r} is not in unlearn.methods {list(params.unlearn.methods)}")
    if (stage in PER_SEED) != (seed is not None):
        raise ValueError(f"stage {stage!r} " + ("needs a seed: `<method>-<seed>`" if stage in PER_SEED
                                                 else "takes no seed"))
    if seed is not None and seed not in params.evaluate.seeds[1:]:
        raise ValueError(f"seed {seed} is not in evaluate.more_seeds {params.evaluate.seeds[1:]}")
    return method, seed


def stage_method(stage: str, method: str | None, params: Any) -> str | None:
    """The method of a per-method stage (`stage_target` without a seed)."""
    return stage_target(stage, method, None, params)[0]


def main(argv: list[str] | None = None) -> int:
    """The DVC stage command: run one stage in this process, in the current folder."""
    from unlearning.console import Console
    from unlearning.params import ConfigError

    from .settings import load, quiet_env

    parser = argparse.ArgumentParser(prog="python -m flows.stages", description="Run one pipeline stage "
                                     "(the command of every stage in dvc.yaml).")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("method", nargs="?", default=None,
                        help="the method of unlearn / unlearn_seed / evaluate (default: from DVC_STAGE, set by "
                             "`dvc repro`)")
    parser.add_argument("seed", nargs="?", default=None, type=int,
                        help="the seed of unlearn_seed (default: from DVC_STAGE)")
    args = parser.parse_args(argv)
    quiet_env()
    os.environ["UNLEARN_LAUNCHER"] = "dvc"
    root = Path.cwd()
    try:
        params = load(root)
        method, seed = stage_target(args.stage, args.method, args.seed, params)
    except (ConfigError, ValueError) as err:  # bad input: one line, before anything runs
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = label(args.stage, method, seed)
    from .locks import Busy, hold

    try:  # one writer at a time: not beside an `unlearn run` of this folder or another clone of this model
        with hold(root, params, f"dvc stage {address(args.stage, method, seed)}"), Console() as console:
            console.say("starting", label=name)
            ctx = StageContext(root, params, log=console.log_fn(name))
            record = run_stage(ctx, args.stage, method, seed)
            console.say(summary(record), label=name)
    except Busy as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
