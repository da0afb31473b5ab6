"""`unlearn calibrate`: the Prefect flow `unlearning_calibrate` over the stage function `flows.calibrate`.

One task runs the stage (the same function `python -m flows.stages calibrate` runs), then records the
profile folder in dvc.lock (`dvc commit calibrate`; not with `--set` overrides, as in the pipeline), so
`dvc status` shows the unlearn@<method> stages whose dependency, the profile folder, changed. The next
`unlearn run` reruns those methods with the profile's settings (a new content key). One writer at a time:
the flow holds the project lock and the registered model's lease, like `unlearn run`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from . import _dvc, prefect_ui
from .calibrate import CalibrationRecord, calibrate
from .context import StageContext
from .locks import hold
from .preflight import check_tracking, ensure_store
from .runner import is_dask
from .settings import load, quiet_env


def _calibrate(ctx: StageContext, methods: list[str] | None, record: bool) -> CalibrationRecord:
    """Run the stage; record the profile folder in dvc.lock when `record`."""
    out = calibrate(ctx, methods)
    if record:
        _dvc.commit(ctx.root, ["calibrate"])
    prefect_ui.run_logger().info("calibrate: profile %s, values %s, held-out gaps %s, skipped %s", out.profile,
                                 out.values, out.heldout, out.skipped or "none")
    return out


calibrate_task = task(name="calibrate", task_run_name="calibrate", cache_policy=NO_CACHE)(_calibrate)


@flow(name="unlearning_calibrate", log_prints=False)
def unlearning_calibrate(root: str = ".", params_path: str = "params.yaml", overrides: list[str] | None = None,
                         methods: list[str] | None = None, wait: bool = False) -> dict[str, Any]:
    """Calibrate `methods` (None: `calibration.methods`, else `unlearn.methods`) for the current data version.

    Args:
        root: the project folder (params.yaml, data/, dvc.yaml).
        params_path: params file, relative to `root`.
        overrides: `section.key=value` overrides (e.g. `calibration.trials=5`); not recorded in dvc.lock.
        methods: the methods to calibrate; each must have a search space.
        wait: wait for another run that holds the lock or lease, instead of failing.

    Returns:
        The `CalibrationRecord` as a dict (profile path and key, chosen values, held-out gaps, MLflow run).
    """
    from unlearning.console import Console

    quiet_env()
    prefect_ui.send_run_logs()
    os.environ["UNLEARN_LAUNCHER"] = "prefect"
    overrides = list(overrides or [])
    path = Path(root).resolve()
    params = load(path, params_path, overrides)
    ensure_store(check_tracking(path, params))
    with hold(path, params, "unlearn calibrate", wait=wait), Console() as console:
        ctx = StageContext(path, params, None, console.log_fn("calibrate"))
        # On Dask the searches are tasks of a subflow with the cluster's runner (flows.calibrate_remote), so the
        # stage runs in this flow's body; on threads it is one task.
        run = _calibrate if is_dask(params) else calibrate_task
        out = run(ctx, list(methods) if methods else None, _dvc.enabled(path) and not overrides)
    return out.model_dump()
