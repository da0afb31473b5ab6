"""Promotion: staging/production/previous aliases, nothing moves on failure, promote by hand, rollback.
Runs on a private sqlite store with real registered versions and fabricated metrics (the gate rule itself
is tested in tests/unit/test_verdicts.py).
"""

from __future__ import annotations

import pytest
from flowtest_utils import BAD, BETTER, GOOD, fake_outputs

from flows import _registry as R
from flows.context import StageContext
from flows.production import promote_version, rollback
from flows.promote import register_and_promote as promote_stage
from flows.records import ModelRecord
from flows.settings import MODEL_FILE, stage_dir


def test_register_and_promote_moves_aliases_and_tags(registry):
    import mlflow

    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    out = promote_stage(StageContext(root, params))
    assert out.production == v2 and out.passing == ["neggrad", "finetune"]
    c = R.client()
    aliases = c.get_registered_model("digits-mlp").aliases
    assert aliases["production"] == int(v2) and aliases["staging-finetune"] == int(v1)
    assert "previous" not in aliases
    tags = R.version_tags("digits-mlp", v1)
    assert tags["gates"] == "passed" and "gates.failed" not in tags
    # Each gate's verdict is in gates.json of the version's own run, not one tag per gate.
    details = mlflow.artifacts.load_dict(f"runs:/{c.get_model_version('digits-mlp', v1).run_id}/gates.json")
    assert details["verdicts"]["retain_acc_drop"].startswith("pass") and details["decided_by_run"] == out.run_id
    assert not [k for k in tags if k.startswith(("gate.", "metric."))]
    gate_metrics = R.run_metrics(out.run_id)
    assert gate_metrics["gate/finetune/mia_vs_oracle/verdict"] == 1.0
    assert gate_metrics["gate/finetune/mia_vs_oracle/value"] == pytest.approx(2.0)

    # A later run whose versions fail: nothing moves, the reasons are version tags.
    fake_outputs(root, {"finetune": v1, "neggrad": v_base}, {"finetune": BAD, "neggrad": BAD})
    out = promote_stage(StageContext(root, params))
    assert out.production == v2 and "no version passed" in out.message
    aliases = c.get_registered_model("digits-mlp").aliases
    assert aliases["production"] == int(v2) and "staging-neggrad" in aliases and aliases["staging-neggrad"] == int(v2)
    assert R.version_tags("digits-mlp", v_base)["gates"] == "failed"
    assert "forget_acc_vs_oracle" in R.version_tags("digits-mlp", v_base)["gates.failed"]


def test_previous_promote_by_hand_and_rollback(registry):
    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BAD})
    promote_stage(StageContext(root, params))
    assert R.alias_version("digits-mlp", "production") == v1

    with pytest.raises(ValueError, match="failed its gates"):
        promote_version(root, params, v2)
    assert R.alias_version("digits-mlp", "production") == v1  # refused: nothing moved
    assert "now in production" in promote_version(root, params, v2, force=True, reason="hotfix")
    assert R.version_tags("digits-mlp", v2)["forced_reason"] == "hotfix"  # who and why stay on the version
    assert "@" in R.version_tags("digits-mlp", v2)["forced_by"]
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
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    promote_stage(StageContext(root, params))  # gates both: v3 (better) goes to production
    assert main(["promote", v1, "--root", str(root)]) == 0
    assert main(["promote", v2, "--root", str(root)]) == 0
    assert main(["rollback", "--root", str(root)]) == 0
    assert R.alias_version("digits-mlp", "production") == v1
    assert "rolled back from v3 to v2" in capsys.readouterr().out
    assert main(["promote", "42", "--root", str(root)]) == 1
    assert "no version 42" in capsys.readouterr().err
    assert main(["promote", "../../x", "--root", str(root)]) == 2
    assert "VERSION must be a version number" in capsys.readouterr().err
    assert main(["promote", v_base, "--force", "--root", str(root)]) == 2
    assert "--force needs --reason" in capsys.readouterr().err


def test_a_method_that_does_not_apply_is_skipped_not_fatal(registry):
    from flows.evaluate import evaluate
    from flows.unlearn import unlearn

    root, params, (v_base, v1, v2) = registry
    ModelRecord(role="base", version=v_base).write(stage_dir(root, "base") / MODEL_FILE)
    rec = unlearn(StageContext(root, params), "gaussian_amnesiac")  # regression-only method, digits is classification
    assert rec.skipped and "regression" in rec.reason
    assert evaluate(StageContext(root, params), "gaussian_amnesiac").skipped
    fake_outputs(root, {"finetune": v1}, {"finetune": GOOD})
    params = params.model_copy(update={"unlearn": params.unlearn.model_validate(
        {"methods": ["finetune", "gaussian_amnesiac"]})})
    out = promote_stage(StageContext(root, params))
    assert out.production == v1 and "gaussian_amnesiac" in out.skipped
    assert "Skipped (not applicable" in out.table


def test_a_rolled_back_version_is_not_promoted_again_by_the_pipeline(registry):
    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    assert promote_stage(StageContext(root, params)).production == v2
    promote_version(root, params, v1)
    promote_version(root, params, v2)
    assert "rolled back from v3 to v2" in rollback(root, params)
    out = promote_stage(StageContext(root, params))  # the same outputs again, as a nightly run would see them
    assert out.production == v1 == R.alias_version("digits-mlp", "production")
