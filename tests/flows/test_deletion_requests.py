"""Deletion requests: intake, duplicates, done-marking, and every kind of bad request rejected with a message."""

from __future__ import annotations

import json

import pytest

from flows import deletions
from flows.cli import main


@pytest.fixture(scope="module")
def digits_ds():
    from unlearning.datasets import load_dataset

    return load_dataset("digits")


def test_intake_records_a_pending_content_hashed_file(tmp_path, digits_ds):
    req, created = deletions.create(tmp_path, digits_ds, ids=[5, 3, 4])
    assert created and req["status"] == "pending" and req["ids"] == [3, 4, 5] and req["n_ids"] == 3
    path = tmp_path / "requests" / f"{req['hash']}.json"
    assert json.loads(path.read_text())["hash"] == req["hash"]
    again, created = deletions.create(tmp_path, digits_ds, ids=[3, 4, 5])
    assert not created and again["hash"] == req["hash"]
    cls, _ = deletions.create(tmp_path, digits_ds, classes=["7"])
    assert cls["n_ids"] == int((digits_ds.y_train == 7).sum())
    pending, ids, deleted = deletions.validate_pending(tmp_path, digits_ds)
    assert len(pending) == 2 and {3, 4, 5} <= set(ids) and not deleted


def test_ids_file_and_done_marking(tmp_path, digits_ds):
    f = tmp_path / "ids.txt"
    f.write_text("# twenty ids\n" + "\n".join(str(i) for i in range(20)) + "\n")
    req, _ = deletions.create(tmp_path, digits_ds, ids_file=str(f))
    assert req["n_ids"] == 20
    deletions.mark(tmp_path, [req["hash"]], "done", version="7")
    done = deletions.load_all(tmp_path)[0]
    assert done["status"] == "done" and done["result"]["version"] == "7"
    # Its ids are gone from the data now: asking again for one of them is an error that says so.
    with pytest.raises(deletions.RequestError, match="already deleted"):
        deletions.create(tmp_path, digits_ds, ids=[3, 500])


@pytest.mark.parametrize("kwargs, message", [
    ({"ids": [1, 99999]}, "out of range"),
    ({"ids": [-1]}, "out of range"),
    ({"ids": []}, "empty forget set"),
    ({"ids": [2, 2]}, "duplicated"),
    ({"classes": ["11"]}, "unknown class"),
    ({"classes": ["cat"]}, "unknown class"),
])
def test_bad_requests_are_rejected(tmp_path, digits_ds, kwargs, message):
    with pytest.raises(deletions.RequestError, match=message):
        deletions.create(tmp_path, digits_ds, **kwargs)
    assert not (tmp_path / "requests").exists() or not list((tmp_path / "requests").glob("*.json"))


def test_bad_ids_file(tmp_path, digits_ds):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\nthree\n")
    with pytest.raises(deletions.RequestError, match="bad.txt:3: not an integer sample id") as err:
        deletions.create(tmp_path, digits_ds, ids_file=str(bad))
    assert "three" not in str(err.value)  # the line's content is never echoed
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(deletions.RequestError, match="empty forget set"):
        deletions.create(tmp_path, digits_ds, ids_file=str(empty))
    with pytest.raises(deletions.RequestError, match="not found"):
        deletions.create(tmp_path, digits_ds, ids_file=str(tmp_path / "missing.txt"))


def test_malformed_request_file_stops_a_run_before_anything_runs(tmp_path, capsys):
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "broken.json").write_text("{not json")
    assert main(["run", "--root", str(tmp_path), "--params", "none.yaml"]) == 2
    err = capsys.readouterr().err
    assert "params file not found" in err
    (tmp_path / "params.yaml").write_text("data: {name: digits}\n")
    assert main(["run", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.json: malformed request file" in err
    assert not (tmp_path / "data").exists()  # nothing ran


def test_cli_request_messages(tmp_path, capsys, tracking):
    (tmp_path / "params.yaml").write_text("data: {name: digits}\n")
    assert main(["request", "--root", str(tmp_path), "--ids", "1,2,x"]) == 2
    assert "not an integer sample id: 'x'" in capsys.readouterr().err
    assert main(["request", "--root", str(tmp_path), "--ids", "1,2,3"]) == 0
    assert "recorded deletion request" in capsys.readouterr().out
    assert main(["request", "--root", str(tmp_path), "--classes", "3"]) == 0
    assert main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 pending" in out and "production: none yet" in out
