"""Promotion: gates pass and fail, staging/production/previous aliases, nothing moves on failure, promote
by hand, rollback. Runs on a private sqlite store with real registered versions and fabricated metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flows import _registry as R
from flows.context import StageContext
from flows.gates import check_gates
from flows.production import promote_version, rollback
from flows.promote import register_and_promote as promote_stage
from flows.records import EvalRecord, ModelRecord, UnlearnRecord, write_json
from flows.settings import MODEL_FILE, RECORD_FILE, load, metrics_file, stage_dir
from flows.tracking import setup_mlflow
from unlearning.config import Gates

BASE = {"forget/acc": 0.99, "retain/acc": 0.99, "test/acc": 0.96, "mia/entropy_lr": 0.80}
ORACLE = {"forget/acc": 0.00, "retain/acc": 0.99, "test/acc": 0.86, "mia/entropy_lr": 0.10}
GATES = Gates()
ORACLE_GATES = {"forget_acc_vs_oracle", "retain_acc_drop", "test_acc_drop", "mia_vs_oracle"}
GOOD = {"forget/acc": 0.01, "retain/acc": 0.985, "test/acc": 0.955, "mia/entropy_lr": 0.12, "oracle/avg_gap": 1.0}
BETTER = {"forget/acc": 0.0, "retain/acc": 0.99, "test/acc": 0.96, "mia/entropy_lr": 0.10, "oracle/avg_gap": 0.5}
BAD = {"forget/acc": 0.30, "retain/acc": 0.90, "test/acc": 0.95, "mia/entropy_lr": 0.40, "oracle/avg_gap": 20.0}


def test_gates_pass_and_fail():
    ok = check_gates(GOOD, BASE, ORACLE, GATES, scenario="class")
    assert {g.name for g in ok} == ORACLE_GATES and all(g.passed for g in ok)
    bad = {g.name: g for g in check_gates(BAD, BASE, ORACLE, GATES, scenario="class")}
    assert not bad["forget_acc_vs_oracle"].passed and math.isclose(bad["forget_acc_vs_oracle"].value, 30.0)
    assert not bad["retain_acc_drop"].passed and not bad["mia_vs_oracle"].passed
    assert bad["test_acc_drop"].passed
    assert bad["retain_acc_drop"].tag.startswith("FAIL 9.00 > 2")


def test_test_gate_uses_kept_classes_when_classes_are_forgotten():
    m = {**GOOD, "test/acc": 0.86, "retain_test/acc": 0.955}
    b = {**BASE, "retain_test/acc": 0.96}
    gates = {g.name: g for g in check_gates(m, b, ORACLE, GATES, scenario="class")}
    assert gates["test_acc_drop"].passed and math.isclose(gates["test_acc_drop"].value, 0.5)


def test_oracle_free_gates_replace_oracle_gates():
    names = {g.name for g in check_gates(GOOD, BASE, None, GATES, scenario="class")}
    assert names == {"forget_acc_max", "mia_max", "retain_acc_drop", "test_acc_drop"}
    ids = {g.name: g for g in check_gates({**GOOD, "forget/acc": 0.99}, BASE, None, GATES, scenario="ids")}
    assert not ids["forget_acc_vs_test"].passed  # forgotten samples still look seen


def test_missing_metric_fails_and_unknown_gate_is_refused_at_load():
    only_test = Gates(forget_acc_vs_oracle=None, mia_vs_oracle=None, retain_acc_drop=None)
    g = check_gates({"retain/acc": 0.99}, BASE, ORACLE, only_test, scenario="ids")
    assert len(g) == 1 and not g[0].passed and "missing" in g[0].text
    with pytest.raises(ValueError, match="nope"):
        Gates(nope=1.0)


@pytest.fixture
def registry(tmp_path, tracking):
    """A project folder with data, a split, and a registered model with 3 versions (one logged model)."""
    import mlflow
    import torch

    from flows.datastore import materialise
    from flows.version_data import version_data
    from unlearning.datasets import load_dataset
    from unlearning.models import create_model, save_checkpoint

    params = load(tmp_path, None, ["unlearn.methods=[finetune,neggrad]"])
    materialise(tmp_path, load_dataset("digits"), {"pending": [], "done": []})
    version_data(StageContext(tmp_path, params))
    setup_mlflow(tmp_path, params)
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("mlp", 10, (1, 8, 8), width=8), tmp_path / "model.pt")
    with mlflow.start_run():
        _, uri = R.log_model(ckpt)
    versions = [R.register("digits-mlp", uri, {"role": r}) for r in ("base", "unlearned", "unlearned")]
    return tmp_path, params, versions


def _fake_outputs(root: Path, versions: dict[str, str], metrics: dict[str, dict]) -> None:
    write_json(metrics_file(root, "base"), BASE)
    write_json(metrics_file(root, "oracle"), ORACLE)
    ModelRecord(role="oracle", version="0").write(stage_dir(root, "oracle") / MODEL_FILE)
    for method, version in versions.items():
        UnlearnRecord(method=method, version=version).write(
            stage_dir(root, "unlearn", method) / RECORD_FILE)
        EvalRecord(method=method).write(stage_dir(root, "evaluate", method) / RECORD_FILE)
        write_json(metrics_file(root, method), metrics[method])


def test_register_and_promote_moves_aliases_and_tags(registry):
    root, params, (v_base, v1, v2) = registry
    _fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    out = promote_stage(StageContext(root, params))
    assert out.production == v2 and out.passing == ["neggrad", "finetune"]
    c = R.client()
    aliases = c.get_registered_model("digits-mlp").aliases
    assert aliases["production"] == int(v2) and aliases["staging-finetune"] == int(v1)
    assert "previous" not in aliases
    tags = R.version_tags("digits-mlp", v1)
    assert tags["gates"] == "passed" and tags["gate.retain_acc_drop"].startswith("pass")

    # A later run whose versions fail: nothing moves, the reasons are version tags.
    _fake_outputs(root, {"finetune": v1, "neggrad": v_base}, {"finetune": BAD, "neggrad": BAD})
    out = promote_stage(StageContext(root, params))
    assert out.production == v2 and "no version passed" in out.message
    aliases = c.get_registered_model("digits-mlp").aliases
    assert aliases["production"] == int(v2) and "staging-neggrad" in aliases and aliases["staging-neggrad"] == int(v2)
    assert R.version_tags("digits-mlp", v_base)["gates"] == "failed"
    assert "forget_acc_vs_oracle" in R.version_tags("digits-mlp", v_base)["gates.failed"]


def test_previous_promote_by_hand_and_rollback(registry):
    root, params, (v_base, v1, v2) = registry
    _fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BAD})
    promote_stage(StageContext(root, params))
    assert R.alias_version("digits-mlp", "production") == v1

    with pytest.raises(ValueError, match="failed its gates"):
        promote_version(root, params, v2)
    assert R.alias_version("digits-mlp", "production") == v1  # refused: nothing moved
    assert "now in production" in promote_version(root, params, v2, force=True)
    assert R.alias_version("digits-mlp", "production") == v2
    assert R.alias_version("digits-mlp", "previous") == v1

    assert "rolled back" in rollback(root, params)
    assert R.alias_version("digits-mlp", "production") == v1
    assert R.alias_version("digits-mlp", "previous") is None
    with pytest.raises(ValueError, match="nothing to roll back"):
        rollback(root, params)
    with pytest.raises(ValueError, match="no version"):
        promote_version(root, params, "99")


def test_cli_promote_and_rollback(registry, capsys):
    from flows.cli import main

    root, params, (v_base, v1, v2) = registry
    assert main(["promote", v1, "--root", str(root)]) == 0
    assert main(["promote", v2, "--root", str(root)]) == 0
    assert main(["rollback", "--root", str(root)]) == 0
    assert R.alias_version("digits-mlp", "production") == v1
    assert "rolled back from v3 to v2" in capsys.readouterr().out
    assert main(["promote", "42", "--root", str(root)]) == 1
    assert "no version '42'" in capsys.readouterr().err


def test_forget_set_gates_are_not_finer_than_one_sample():
    m = {**GOOD, "forget/acc": 1.0, "mia/entropy_lr": 0.15}
    o = {**ORACLE, "forget/acc": 0.95, "mia/entropy_lr": 0.10}
    gates = {g.name: g for g in check_gates(m, BASE, o, GATES, scenario="ids", n_forget=20)}
    assert gates["forget_acc_vs_oracle"].passed and "raised to one of 20" in gates["forget_acc_vs_oracle"].text
    assert gates["mia_vs_oracle"].passed  # 5.000000000000004 points is one sample, not more
    strict = {g.name: g for g in check_gates(m, BASE, o, GATES, scenario="ids", n_forget=1000)}
    assert not strict["forget_acc_vs_oracle"].passed


def test_a_method_that_does_not_apply_is_skipped_not_fatal(registry):
    from flows.evaluate import evaluate
    from flows.unlearn import unlearn

    root, params, (v_base, v1, v2) = registry
    ModelRecord(role="base", version=v_base).write(stage_dir(root, "base") / MODEL_FILE)
    rec = unlearn(StageContext(root, params), "gaussian_amnesiac")  # regression-only method, digits is classification
    assert rec.skipped and "regression" in rec.reason
    assert evaluate(StageContext(root, params), "gaussian_amnesiac").skipped
    _fake_outputs(root, {"finetune": v1}, {"finetune": GOOD})
    params = params.model_copy(update={"unlearn": params.unlearn.model_validate(
        {"methods": ["finetune", "gaussian_amnesiac"]})})
    out = promote_stage(StageContext(root, params))
    assert out.production == v1 and "gaussian_amnesiac" in out.skipped
    assert "Skipped (not applicable" in out.table


def test_a_rolled_back_version_is_not_promoted_again_by_the_pipeline(registry):
    root, params, (v_base, v1, v2) = registry
    _fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    assert promote_stage(StageContext(root, params)).production == v2
    promote_version(root, params, v1)
    promote_version(root, params, v2)
    assert "rolled back from v3 to v2" in rollback(root, params)
    out = promote_stage(StageContext(root, params))  # the same outputs again, as a nightly run would see them
    assert out.production == v1 == R.alias_version("digits-mlp", "production")
