"""The deletion promise: production only ever holds a version that honours every done deletion request,
whatever moves it (the pipeline, `unlearn promote`, `unlearn rollback`), wherever the move is cut short,
and from whichever clone. Private sqlite store, real registered versions, fabricated metrics.
"""

from __future__ import annotations

import pytest
from flowtest_utils import BETTER, GOOD, fake_outputs

from flows import _registry as R
from flows import deletions
from flows.cli import main
from flows.context import StageContext
from flows.ledger import Ledger
from flows.production import PromotionRefused, needs_reconcile, promote_version, reconcile, rollback
from flows.promote import register_and_promote as promote_stage
from flows.records import SplitRecord
from flows.settings import SPLIT_FILE, load, registered_model_name, tracking_uri
from flows.store_sql import SqliteStore
from flows.version_data import version_data

NAME = "digits-mlp"


class Crash(BaseException):
    """Stands for a SIGKILL: nothing after it runs (BaseException, so no `except Exception` swallows it)."""


@pytest.fixture(scope="module")
def digits_ds():
    from unlearning.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture
def served(registry, digits_ds):
    """v2 (finetune) in production before any request; then request R, which only v3 (neggrad) honours."""
    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1}, {"finetune": GOOD})
    assert promote_stage(StageContext(root, only(params, "finetune"))).production == v1
    ledger = Ledger(root, params)
    req, _ = deletions.create(ledger, digits_ds, ids=[4, 5, 6])
    R.set_tags(NAME, v2, {"honours": req["hash"]})
    return root, params, ledger, req["hash"], (v_base, v1, v2)


def only(params, *methods):
    """The params with just these methods listed (each promotion below gates its own subset)."""
    return params.model_copy(update={"unlearn": params.unlearn.model_validate({"methods": list(methods)})})


def _cut_short(root, params) -> bool:
    """What the sqlite reader of `unlearn status` sees: a move that `reconcile` must complete."""
    store = SqliteStore(tracking_uri(root, params))
    try:
        return needs_reconcile(store, params, NAME)
    finally:
        store.close()


def _status(ledger: Ledger, h: str) -> str:
    return ledger.get(h)["status"]


def test_rollback_and_promote_never_reinstate_a_model_from_before_a_done_deletion(served, capsys):
    """Defect 1: two rollbacks put back a pre-deletion model; `unlearn promote 1` was accepted."""
    root, params, ledger, h, (v_base, v1, v2) = served
    fake_outputs(root, {"neggrad": v2}, {"neggrad": BETTER})
    out = promote_stage(StageContext(root, only(params, "neggrad")))
    assert out.production == v2 and _status(ledger, h) == "done"  # done in the step that moved production
    assert ledger.get(h)["result"]["version"] == v2

    with pytest.raises(PromotionRefused, match=f"rollback refused: {NAME} v{v1} does not honour 1 deletion.*{h}"):
        rollback(root, params)
    with pytest.raises(PromotionRefused, match=f"v{v1} does not honour"):
        promote_version(root, params, v1)  # it passed its gates, but before the deletion
    with pytest.raises(PromotionRefused, match=f"v{v_base} does not honour"):
        promote_version(root, params, v_base, force=True, reason="--force cannot break the ledger")
    assert R.alias_version(NAME, "production") == v2
    assert main(["rollback", "--root", str(root)]) == 1
    assert main(["status", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 pending, 1 done" in out and "honours every done deletion request (1)" in out
    R.client().set_registered_model_alias(NAME, "production", v_base)  # moved behind unlearn's back
    assert main(["status", "--root", str(root)]) == 0
    assert f"WARNING: v{v_base} does not honour 1 done deletion request(s): {h}" in capsys.readouterr().out


def test_only_gated_versions_promote_without_force(registry):
    """Defect 2: a version never gated (left by a killed run, or the base model) was promoted by hand."""
    root, params, (v_base, v1, v2) = registry
    with pytest.raises(PromotionRefused, match="never gated"):
        promote_version(root, params, v1)
    with pytest.raises(PromotionRefused, match="never gated"):
        promote_version(root, params, v_base)
    assert R.alias_version(NAME, "production") is None
    assert "now in production" in promote_version(root, params, v1, force=True, reason="no gates yet")


@pytest.mark.parametrize("crash_at", ["alias", "after_alias", "mark"])
def test_every_crash_point_of_a_promotion_leaves_ledger_and_production_agreeing(served, monkeypatch, crash_at):
    """Defect 5: a kill between the production move and the done-marking left them disagreeing."""
    root, params, ledger, h, (v_base, v1, v2) = served
    fake_outputs(root, {"neggrad": v2}, {"neggrad": BETTER})
    real_alias, real_mark = R.set_alias, deletions.mark

    def set_alias(name, alias, version):
        if alias == "production" and crash_at == "alias":
            raise Crash
        real_alias(name, alias, version)
        if alias == "production" and crash_at == "after_alias":
            raise Crash

    def mark(*args, **kw):
        raise Crash

    monkeypatch.setattr(R, "set_alias", set_alias)
    if crash_at == "mark":
        monkeypatch.setattr(deletions, "mark", mark)
    with pytest.raises(Crash):
        promote_stage(StageContext(root, only(params, "neggrad")))
    monkeypatch.setattr(R, "set_alias", real_alias)
    monkeypatch.setattr(deletions, "mark", real_mark)

    moved = crash_at != "alias"
    assert R.alias_version(NAME, "production") == (v2 if moved else v1)
    # `unlearn status` reads without MLflow only where nothing needs completing.
    assert _cut_short(root, params) == moved
    # Whatever the crash point: the next start completes the move or finds nothing to complete.
    marked = reconcile(ledger, params, NAME)
    assert not _cut_short(root, params)
    assert marked == ([h] if moved else [])
    assert _status(ledger, h) == ("done" if moved else "pending")
    if moved:
        assert R.history(NAME)[-2:] == [v1, v2] and R.alias_version(NAME, "previous") == v1
    # A rerun's version_data then processes the request only if production does not honour it yet.
    rec = version_data(StageContext(root, params))
    assert rec.requests == ([] if moved else [h])
    assert (h in rec.removed_requests) == moved


@pytest.mark.parametrize("crash_at", ["intent", "alias"])
def test_a_rollback_cut_short_is_completed_or_undone(registry, monkeypatch, crash_at):
    root, params, (v_base, v1, v2) = registry
    fake_outputs(root, {"finetune": v1, "neggrad": v2}, {"finetune": GOOD, "neggrad": BETTER})
    promote_stage(StageContext(root, params))
    promote_version(root, params, v1)
    assert R.history(NAME) == [v2, v1]
    real_alias = R.set_alias

    def set_alias(name, alias, version):
        if alias == "production" and crash_at == "intent":
            raise Crash
        real_alias(name, alias, version)
        if alias == "production":
            raise Crash

    monkeypatch.setattr(R, "set_alias", set_alias)
    with pytest.raises(Crash):
        rollback(root, params)
    monkeypatch.setattr(R, "set_alias", real_alias)
    assert _cut_short(root, params)  # intent tag left (and, after the alias moved, a stale history)
    reconcile(Ledger(root, params), params, NAME)
    assert not _cut_short(root, params)
    if crash_at == "intent":  # the alias never moved: the rollback did not happen
        assert R.alias_version(NAME, "production") == v1 and "rolled_back" not in R.version_tags(NAME, v1)
        assert R.history(NAME) == [v2, v1] and R.alias_version(NAME, "previous") == v2
    else:  # the alias moved: the rollback is completed
        assert R.alias_version(NAME, "production") == v2 and R.history(NAME) == [v2]
        assert R.alias_version(NAME, "previous") is None


def test_a_second_clone_removes_done_requests_and_cannot_promote_around_them(served, tmp_path):
    """Defect 4: a clone without the request files put a model trained on the deleted ids in production."""
    root, params, ledger, h, (v_base, v1, v2) = served
    fake_outputs(root, {"neggrad": v2}, {"neggrad": BETTER})
    promote_stage(StageContext(root, only(params, "neggrad")))
    clone = tmp_path / "second_clone"
    clone.mkdir()
    rec = version_data(StageContext(clone, params))  # same store, no local trace of the request
    assert rec.removed_requests == [h] and {4, 5, 6} <= set(rec.removed_ids)
    assert h in rec.lineage()["honours"] and h in rec.lineage(forgets=False)["honours"]
    with pytest.raises(PromotionRefused, match="does not honour"):
        promote_version(clone, params, v1)


def test_registry_tags_never_become_paths(registry, tmp_path):
    """Defect 7: a version's `requests` tag `../../victim` made `unlearn promote --force` write outside."""
    root, params, (v_base, v1, v2) = registry
    victim = tmp_path.parent / "victim.json"
    victim.write_text("untouched")
    R.set_tags(NAME, v1, {"requests": "../../victim", "honours": "../../victim,../victim.json"})
    promote_version(root, params, v1, force=True, reason="test")
    assert victim.read_text() == "untouched"
    assert not list(tmp_path.parent.glob("*.json.*"))


def test_experiments_register_apart_and_never_process_requests(registry, digits_ds, monkeypatch):
    """Defect 11: a researcher's `--set request.classes=[3]` run promoted into the service's production."""
    root, params, _ = registry
    deletions.create(Ledger(root, params), digits_ds, ids=[7, 8])
    exp = load(root, None, ["request.classes=[3]"])
    assert registered_model_name(exp) == "digits-mlp-exp" and registered_model_name(params) == NAME
    rec = version_data(StageContext(root, exp))
    assert rec.requests == [] and rec.source == "params"
    assert SplitRecord.read(root / SPLIT_FILE).request["classes"] == [3]
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc")  # what `dvc exp run` sets for its stages
    assert registered_model_name(load(root, None)) == "digits-mlp-exp"


def test_refusals_are_one_line_with_their_exit_codes(served, capsys):
    """The CLI's refusals around production and the ledger: exit 1 for a refused move, 2 for bad input."""
    root, params, ledger, h, (v_base, v1, v2) = served
    fake_outputs(root, {"neggrad": v2}, {"neggrad": BETTER})
    promote_stage(StageContext(root, only(params, "neggrad")))  # h is done now, honoured by v3 only
    r = ["--root", str(root)]
    rows = [
        (["promote", v1, *r], 1, f"promotion refused: {NAME} v{v1} does not honour 1 deletion request(s)"),
        (["promote", v_base, "--force", "--reason", "x", *r], 1, f"v{v_base} does not honour 1 deletion"),
        (["rollback", *r], 1, f"rollback refused: {NAME} v{v1} does not honour"),
        (["promote", v_base, "--force", *r], 2, "--force needs --reason TEXT"),
        (["promote", "abc", *r], 2, "VERSION must be a version number such as 7; got 'abc'"),
        (["promote", "99", *r], 1, f"{NAME} has no version 99"),
        (["request", "--cancel", "0123456789ab", *r], 2, "--cancel: no deletion request '0123456789ab'"),
        (["request", "--cancel", h, *r], 2, f"--cancel: request {h} is done"),
        (["request", "--classes", "0,1,2,3,4,5,6,7,8,9", *r], 2, "would delete every training sample"),
    ]
    for argv, code, fragment in rows:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], (argv, err)
    assert R.alias_version(NAME, "production") == v2
