"""Fault injection: `unlearn run` SIGKILLed at every stage boundary and inside the promotion, then rerun.

`UNLEARN_CRASH_AT=<point>` makes the run kill itself there (flows/faults.py). The runs of one deletion
request are chained: each rerun reuses what the killed ones finished and dies at the next point; the last
one finishes. After every kill and at the end: production honours every done request, and the request is
done at most once. At the end: nothing left RUNNING, no orphan version (one unlearned version per method
for the request), no Prefect server left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from flowtest_utils import TINY, make_project, new_store

pytestmark = pytest.mark.slow

# In pipeline order; each is reached by the run that follows the previous kill.
STAGE_POINTS = ["after:version_data", "after:train_base", "after:retrain_oracle", "unlearn:registered",
                "after:unlearn[finetune]", "after:unlearn[neggrad]", "after:evaluate[finetune]",
                "promote:alias"]


def _unlearn(root, env, *args, crash=None, timeout=600):
    run_env = {**env, **({"UNLEARN_CRASH_AT": crash} if crash else {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args, "--root", str(root)], cwd=root, env=run_env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _state(root, env):
    """(production version, its honours, done request hashes, ledger entries) read from the store."""
    import mlflow

    from flows.ledger import Ledger
    from flows.settings import load

    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    ledger = Ledger(root, load(root))
    c = mlflow.MlflowClient()
    try:
        prod = c.get_model_version_by_alias("digits-mlp", "production")
    except mlflow.exceptions.MlflowException:
        prod = None
    entries = ledger.entries("digits")
    done = {r["hash"] for r in entries if r["status"] == "done"}
    honours = set(prod.tags.get("honours", "").split(",")) if prod else set()
    return prod, honours, done, entries


def _assert_promise(root, env):
    prod, honours, done, _ = _state(root, env)
    assert done <= honours, f"production v{prod and prod.version} honours {honours}, ledger done {done}"


def test_a_run_killed_anywhere_finishes_on_rerun_without_orphans_or_double_processing(tmp_path_factory,
                                                                                       mlflow_template):
    import mlflow

    # Gates that any version passes: the promotion (and its crash point) must be reached.
    gates = {"forget_acc_vs_oracle": 100.0, "retain_acc_drop": 100.0, "test_acc_drop": 100.0, "mia_vs_oracle": 100.0}
    root = make_project(tmp_path_factory.mktemp("faults"), {**TINY, ("promote", "gates"): gates})
    env = {**os.environ, "MLFLOW_TRACKING_URI": new_store(mlflow_template, root),
           "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect_home")), "UNLEARNING_PLAIN": "1"}
    env.pop("PREFECT_API_URL", None)
    first = _unlearn(root, env, "run")  # production v-something, before any request
    assert first.returncode == 0, first.stderr[-3000:]
    ids = ",".join(str(i) for i in range(100, 120))
    assert _unlearn(root, env, "request", "--ids", ids).returncode == 0
    _, _, _, entries = _state(root, env)
    (req,) = entries

    for point in STAGE_POINTS:
        r = _unlearn(root, env, "run", crash=point)
        assert r.returncode == -9, f"{point}: exit {r.returncode}\n{r.stderr[-3000:]}"
        _assert_promise(root, env)
    final = _unlearn(root, env, "run")
    assert final.returncode == 0, final.stderr[-3000:]
    _assert_promise(root, env)

    prod, honours, done, entries = _state(root, env)
    assert req["hash"] in done and req["hash"] in honours
    c = mlflow.MlflowClient()
    mine = [v for v in c.search_model_versions("name='digits-mlp'")
            if v.tags.get("requests") == req["hash"] and v.tags.get("role") == "unlearned"]
    assert sorted(v.tags["method"] for v in mine) == ["finetune", "neggrad"], "orphan or missing versions"
    exps = [e.experiment_id for e in c.search_experiments()]
    running = c.search_runs(exps, filter_string="attributes.status = 'RUNNING'")
    assert not running, [r.info.run_name for r in running]
    # Processed by one promotion only: the version the ledger names is one of this request's two versions.
    result = next(r for r in entries if r["hash"] == req["hash"])["result"]
    assert result["version"] in {str(v.version) for v in mine}
