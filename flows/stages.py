"""The pipeline's stages by name, and the one command line that `dvc repro` runs for each of them.

`python -m flows.stages <stage> [method]` is every stage command in dvc.yaml; the Prefect flow
(`flows.pipeline`) calls the same functions through `run_stage`, so the code of a stage exists once:

    version_data          flows.version_data.version_data(ctx)      -> SplitRecord
    train_base            flows.train.train_base(ctx)               -> ModelRecord
    retrain_oracle        flows.train.retrain_oracle(ctx)           -> ModelRecord
    unlearn@<method>      flows.unlearn.unlearn(ctx, method)        -> UnlearnRecord
    evaluate@<method>     flows.evaluate.evaluate(ctx, method)      -> EvalRecord
    register_and_promote  flows.promote.register_and_promote(ctx)   -> PromotionRecord
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .context import StageContext
from .evaluate import evaluate
from .promote import register_and_promote
from .records import ModelRecord, PromotionRecord, Record, SplitRecord, UnlearnRecord
from .train import retrain_oracle, train_base
from .unlearn import unlearn
from .version_data import version_data

STAGES: dict[str, Callable[..., Record]] = {
    "version_data": version_data, "train_base": train_base, "retrain_oracle": retrain_oracle,
    "unlearn": unlearn, "evaluate": evaluate, "register_and_promote": register_and_promote,
}
PER_METHOD = frozenset({"unlearn", "evaluate"})


def address(stage: str, method: str | None = None) -> str:
    """The stage's name in dvc.yaml: `unlearn@salun` for per-method stages."""
    return f"{stage}@{method}" if method else stage


def label(stage: str, method: str | None = None) -> str:
    """The stage's name for people and Prefect: `unlearn[salun]`."""
    return f"{stage}[{method}]" if method else stage


def run_stage(ctx: StageContext, stage: str, method: str | None = None) -> Record:
    """Run one stage function; a per-method stage needs `method`, the others refuse one."""
    if stage not in STAGES:
        raise ValueError(f"'stage' must be one of {sorted(STAGES)}; got {stage!r}")
    if (stage in PER_METHOD) != (method is not None):
        raise ValueError(f"stage {stage!r} " + ("needs a method" if stage in PER_METHOD else "takes no method"))
    if method is not None:
        if method not in ctx.params.unlearn.methods:
            raise ValueError(f"method {method!r} is not in unlearn.methods {ctx.params.unlearn.methods}")
        return STAGES[stage](ctx, method)
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
    return "skipped (method skipped)" if getattr(record, "skipped", False) else "done"


def main(argv: list[str] | None = None) -> int:
    """The DVC stage command: run one stage in this process, in the current folder."""
    from unlearning.console import Console

    from .settings import load, quiet_env

    parser = argparse.ArgumentParser(prog="python -m flows.stages", description="Run one pipeline stage "
                                     "(the command of every stage in dvc.yaml).")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("method", nargs="?", default=None, help="the method of unlearn / evaluate")
    args = parser.parse_args(argv)
    quiet_env()
    os.environ["UNLEARN_LAUNCHER"] = "dvc"
    root = Path.cwd()
    name = label(args.stage, args.method)
    with Console() as console:
        console.say("starting", label=name)
        ctx = StageContext(root, load(root), log=console.log_fn(name))
        record = run_stage(ctx, args.stage, args.method)
        console.say(summary(record), label=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
