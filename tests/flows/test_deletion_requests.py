"""Deletion requests: intake into the ledger, duplicates, done-marking, cancelling, and every kind of bad
request rejected with a message."""

from __future__ import annotations

import pytest

from flows import deletions
from flows.cli import main
from flows.ledger import Ledger, LedgerError
from flows.settings import load


@pytest.fixture(scope="module")
def digits_ds():
    from unlearning.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture
def ledger(tmp_path, tracking):
    return Ledger(tmp_path, load(tmp_path, None))


def test_intake_records_a_pending_content_hashed_entry(tmp_path, ledger, digits_ds):
    req, created = deletions.create(ledger, digits_ds, ids=[5, 3, 4])
    assert created and req["status"] == "pending" and req["ids"] == [3, 4, 5] and req["n_ids"] == 3
    assert not (tmp_path / "requests").exists()  # the ledger is in the tracking store, not the checkout
    again, created = deletions.create(ledger, digits_ds, ids=[3, 4, 5])
    assert not created and again["hash"] == req["hash"]
    cls, _ = deletions.create(ledger, digits_ds, classes=["7"])
    assert cls["n_ids"] == int((digits_ds.y_train == 7).sum())
    pending, ids, deleted = deletions.validate_pending(ledger, digits_ds)
    assert len(pending) == 2 and {3, 4, 5} <= set(ids) and not deleted


def test_ids_file_and_done_marking(tmp_path, ledger, digits_ds):
    f = tmp_path / "ids.txt"
    f.write_text("# twenty ids\n" + "\n".join(str(i) for i in range(20)) + "\n")
    req, _ = deletions.create(ledger, digits_ds, ids_file=str(f))
    assert req["n_ids"] == 20
    deletions.mark(ledger, [req["hash"]], "done", version="7")
    done = deletions.load_all(ledger)[0]
    assert done["status"] == "done" and done["result"]["version"] == "7"
    # Its ids are gone from the data now: asking again for one of them is an error that says so.
    with pytest.raises(deletions.RequestError, match="already deleted"):
        deletions.create(ledger, digits_ds, ids=[3, 500])


def test_a_request_that_would_delete_every_sample_is_refused_and_cancel_withdraws(ledger, digits_ds):
    """Defect 8: `--classes 0,...,9` was accepted and blocked every later run; there was no cancel."""
    with pytest.raises(deletions.RequestError, match="would delete every training sample"):
        deletions.create(ledger, digits_ds, classes=[str(c) for c in range(10)])
    nine, _ = deletions.create(ledger, digits_ds, classes=[str(c) for c in range(9)])
    with pytest.raises(deletions.RequestError, match="would delete every training sample"):
        deletions.create(ledger, digits_ds, classes=["9"])  # together with the pending one: everything
    assert deletions.cancel(ledger, nine["hash"], by="t")["status"] == "cancelled"
    assert deletions.validate_pending(ledger, digits_ds)[0] == []
    last, created = deletions.create(ledger, digits_ds, classes=["9"])
    assert created and last["status"] == "pending"
    deletions.mark(ledger, [last["hash"]], "done", version="3")
    with pytest.raises(deletions.RequestError, match="is done"):
        deletions.cancel(ledger, last["hash"], by="t")
    with pytest.raises(deletions.RequestError, match="no deletion request"):
        deletions.cancel(ledger, "../../victim", by="t")


def test_a_second_clone_sees_the_ledger(tmp_path, tracking, digits_ds):
    """Defect 4: requests lived in one checkout's requests/ folder; a clone without them never saw them."""
    a, b = tmp_path / "clone_a", tmp_path / "clone_b"
    a.mkdir()
    b.mkdir()
    req, _ = deletions.create(Ledger(a, load(a, None)), digits_ds, ids=[1, 2])
    seen = deletions.load_all(Ledger(b, load(b, None)))
    assert [r["hash"] for r in seen] == [req["hash"]] and seen[0]["status"] == "pending"


def test_an_edited_ledger_entry_is_reported_not_trusted(ledger, digits_ds):
    req, _ = deletions.create(ledger, digits_ds, ids=[1, 2])
    ledger.client.set_tag(req["_runs"][0], "ledger.body", '{"dataset": "digits", "kind": "ids", "ids": [1]}')
    with pytest.raises(LedgerError, match="does not match its content hash"):
        deletions.load_all(ledger)


@pytest.mark.parametrize("kwargs, message", [
    ({"ids": [1, 99999]}, "out of range"),
    ({"ids": [-1]}, "out of range"),
    ({"ids": []}, "empty forget set"),
    ({"ids": [2, 2]}, "duplicated"),
    ({"classes": ["11"]}, "unknown class"),
    ({"classes": ["cat"]}, "unknown class"),
])
def test_bad_requests_are_rejected(ledger, digits_ds, kwargs, message):
    with pytest.raises(deletions.RequestError, match=message):
        deletions.create(ledger, digits_ds, **kwargs)
    assert deletions.load_all(ledger) == []


def test_bad_ids_file(tmp_path, ledger, digits_ds):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nthree\n")
    with pytest.raises(deletions.RequestError, match="bad.txt:3: not an integer sample id") as err:
        deletions.create(ledger, digits_ds, ids_file=str(bad))
    assert "three" not in str(err.value)  # the line's content is never echoed
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(deletions.RequestError, match="empty forget set"):
        deletions.create(ledger, digits_ds, ids_file=str(empty))
    with pytest.raises(deletions.RequestError, match="not found"):
        deletions.create(ledger, digits_ds, ids_file=str(tmp_path / "missing.txt"))


def test_a_bad_pending_request_stops_a_run_before_anything_runs(tmp_path, ledger, capsys):
    assert main(["run", "--root", str(tmp_path), "--params", "none.yaml"]) == 2
    err = capsys.readouterr().err
    assert "params file not found" in err
    (tmp_path / "params.yaml").write_text("data: {name: digits}\n")
    bad = ledger.add({"dataset": "digits", "kind": "ids", "ids": [99999]}, n_ids=1, source="test")  # unvalidated
    assert main(["run", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"request {bad['hash']}" in err and "out of range" in err
    assert not (tmp_path / "data").exists()  # nothing ran


def test_cli_request_messages(tmp_path, capsys, tracking):
    (tmp_path / "params.yaml").write_text("data: {name: digits}\n")
    assert main(["request", "--root", str(tmp_path), "--ids", "1,2,x"]) == 2
    assert "not an integer sample id: 'x'" in capsys.readouterr().err
    assert main(["request", "--root", str(tmp_path), "--ids", "1,2,3"]) == 0
    assert "recorded deletion request" in capsys.readouterr().out
    assert main(["request", "--root", str(tmp_path), "--classes", "3"]) == 0
    out = capsys.readouterr().out
    h = out.split("recorded deletion request ")[1].split()[0]
    assert main(["request", "--root", str(tmp_path), "--cancel", h]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 pending" in out and "1 cancelled" in out and "production: none yet" in out
