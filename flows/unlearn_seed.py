"""Stage `unlearn_seed[<method>/seed-<seed>]`: one more unlearning seed of a method, on the same base model.

`evaluate.seed` makes the registered version (flows.unlearn); each of `evaluate.more_seeds` runs the method
again here, one stage per (method, seed): each run is timed alone, has its own MLflow run (tagged with its
seed) and is rerun only when its own inputs change. Its model is kept as
`outputs/unlearn_seed/<method>/seed-<seed>/model.pt` with a `SeedRecord` beside it, for the evaluate stage's
interval over seeds; it is never registered (only the first seed serves). What this run did is in
`outputs/runs/unlearn_seed-<method>-<seed>.json`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import _registry as registry
from .context import StageContext
from .profiles import method_settings, source_tags
from .records import ModelRecord, SeedRecord, StageRun, UnlearnRecord
from .settings import CHECKPOINT, MODEL_FILE, RECORD_FILE, stage_dir, tracking_uri
from .tracking import method_params, stage_run

SEEDS_DIR = "outputs/unlearn_seed"


def seed_dir(root: Path, method: str, seed: int | None = None) -> Path:
    """`outputs/unlearn_seed/<method>` (the evaluate stage's dependency), or one seed's folder in it."""
    folder = Path(root) / SEEDS_DIR / method
    return folder if seed is None else folder / f"seed-{seed}"


def keep_seed_dir(root: Path, method: str) -> Path:
    """Write `outputs/unlearn_seed/<method>/README` (an output of `unlearn@<method>`).

    The folder is a dependency of `evaluate@<method>`, also with no other seed: DVC restores outputs in a
    fresh checkout (`dvc exp run --temp`), never an empty folder, and a missing dependency fails the stage.
    """
    path = seed_dir(root, method) / "README"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"Models of {method}'s other unlearning seeds (evaluate.more_seeds), one folder per seed, made by "
                    f"the stages unlearn_seed@{method}-<seed>.\nThis file keeps the folder, a dependency of "
                    f"evaluate@{method}, in every checkout.\n")
    return path


def prune_stale(root: Path, method: str, seeds: list[int]) -> None:
    """Remove the models of seeds no longer in `evaluate.more_seeds` (DVC never deletes a dropped stage's
    outputs), so they are neither scored nor part of the evaluate stage's dependency."""
    folder = seed_dir(root, method)
    keep = {seed_dir(root, method, s).name for s in seeds}
    for old in folder.glob("seed-*") if folder.is_dir() else []:
        if old.name not in keep:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def unlearn_seed(ctx: StageContext, method: str, seed: int) -> SeedRecord:
    """Run `method` once more with `seed` on the base model; keep the model and its time."""
    import mlflow

    from unlearning.methods import METHODS
    from unlearning.models import save_checkpoint
    from unlearning.steps import run_method
    from unlearning.utils import get_device

    from .version_data import load_split

    root = ctx.root
    if seed not in ctx.params.evaluate.seeds[1:]:
        raise ValueError(f"seed {seed} is not in evaluate.more_seeds {ctx.params.evaluate.seeds[1:]}")
    split, info = load_split(root)
    settings = method_settings(ctx.params, root, split)  # the same settings as unlearn[<method>]
    params = settings.params
    outdir = seed_dir(root, method, seed)
    outdir.mkdir(parents=True, exist_ok=True)
    runs_file = StageRun.path(root, "unlearn_seed", f"{method}-{seed}")
    uri = tracking_uri(root, params)
    registered = UnlearnRecord.read(stage_dir(root, "unlearn", method) / RECORD_FILE)
    if registered.skipped:  # the method cannot serve this request: neither can its other seeds
        (outdir / CHECKPOINT).unlink(missing_ok=True)
        record = SeedRecord(method=method, seed=seed, skipped=True, reason=registered.reason, **info.lineage())
        record.write(outdir / RECORD_FILE)
        StageRun(stage="unlearn_seed", source="skipped", tracking_uri=uri).write(runs_file)
        return record

    base = ModelRecord.read(stage_dir(root, "base") / MODEL_FILE)
    original = registry.load_verified(stage_dir(root, "base") / CHECKPOINT, base.checkpoint_sha256,
                                      f"outputs/base/{CHECKPOINT}", get_device(params.train.device))
    cfg = params.unlearn.method_config(method)
    tags = {**info.lineage(), "method": method, "seed": str(seed), "registered": "false",
            "base_version": base.version or "", "data_declared": ",".join(sorted(METHODS.get(method).needs)) or "none",
            **source_tags(settings, method, root)}
    with stage_run(root, params, "unlearn", run_name=f"unlearn[{method}/seed-{seed}]",
                   parent_run_id=ctx.parent_run_id, tags=tags) as run:
        mlflow.log_params({"seed": seed, **method_params(method, cfg, split, seed)})
        result = run_method(params, method, original, split, seed=seed, log=ctx.log)
        sha = registry.sha256_file(save_checkpoint(result.model, outdir / CHECKPOINT))
        mlflow.log_metrics({"time/s": result.time_s})
        mlflow.set_tags({"data_touched": ",".join(result.touched) or "none", registry.CHECKSUM_TAG: sha})
    record = SeedRecord(method=method, seed=seed, checkpoint_sha256=sha, time_s=result.time_s, **info.lineage())
    record.write(outdir / RECORD_FILE)
    StageRun(stage="unlearn_seed", run_id=run.run_id, source="unlearned", tracking_uri=uri).write(runs_file)
    return record
