"""Deletion requests: small content-hashed JSON files under `requests/`, pending until a pipeline run.

`unlearn request --ids 1,2,3 | --ids-file FILE | --classes 3` validates a request against the dataset
and records `requests/<hash>.json` (status `pending`). A pipeline run takes every pending request of
its dataset, forgets the union, and marks each one `done` (with the model version now in production) or
`refused` (with the gate failures) at the end. Ids are sample ids: indices in the training tensors, the
same ids everywhere (`unlearning.data`). A bad request is rejected before anything runs, with the
problem named: unknown / out-of-range / already-deleted ids, an empty request, a malformed file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

REQUESTS_DIR = "requests"
STATUSES = ("pending", "done", "refused")


class RequestError(ValueError):
    """A deletion request that cannot be accepted; the message names the problem."""


def parse_ids(text: str) -> list[int]:
    """`"1,2, 3"` -> [1, 2, 3]; a token that is not an integer is an error that names it."""
    ids = []
    for tok in text.replace(",", " ").split():
        try:
            ids.append(int(tok))
        except ValueError:
            raise RequestError(f"--ids: not an integer sample id: {tok!r}") from None
    return ids


def _hash(body: dict[str, Any]) -> str:
    from unlearning.utils import content_hash

    return content_hash(body, 12)


def _folder(root: Path) -> Path:
    return root / REQUESTS_DIR


def load_all(root: Path) -> list[dict[str, Any]]:
    """Every request file, oldest first; a malformed file raises `RequestError` naming it."""
    out = []
    folder = _folder(root)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            req = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RequestError(f"{path}: malformed request file (not JSON: {err})") from None
        missing = [k for k in ("hash", "dataset", "kind", "status") if not isinstance(req, dict) or k not in req]
        if missing:
            raise RequestError(f"{path}: malformed request file (missing {missing})")
        if req["status"] not in STATUSES:
            raise RequestError(f"{path}: unknown status {req['status']!r}; expected one of {list(STATUSES)}")
        if req["kind"] not in ("ids", "classes"):
            raise RequestError(f"{path}: unknown kind {req['kind']!r}; expected 'ids' or 'classes'")
        req["_path"] = str(path)
        out.append(req)
    return sorted(out, key=lambda r: (r.get("created", ""), r["hash"]))


def of_dataset(requests: list[dict[str, Any]], dataset: str, status: str) -> list[dict[str, Any]]:
    return [r for r in requests if r["dataset"] == dataset and r["status"] == status]


def resolve_ids(req: dict[str, Any], dataset) -> list[int]:
    """The sample ids a request names (a class request: every training sample of those classes)."""
    import torch

    if req["kind"] == "ids":
        return sorted(int(i) for i in req["ids"])
    from unlearning.requests import _class_index

    classes = [_class_index(c, dataset.classes, "class") for c in req["classes"]]
    return torch.nonzero(torch.isin(dataset.y_train, torch.tensor(classes))).flatten().tolist()


def check(req: dict[str, Any], dataset, deleted: set[int]) -> list[int]:
    """Validate one request against the dataset and the ids already deleted; returns its sample ids."""
    from unlearning.requests import check_ids

    where = f"request {req['hash']}" + (f" ({req['_path']})" if "_path" in req else "")
    try:
        if req["kind"] == "classes":
            if dataset.task != "classification":
                raise ValueError(f"class requests need a classification dataset; {dataset.name} is "
                                 f"{dataset.task}")
            if not req.get("classes"):
                raise ValueError("the request names no class: empty forget set")
        elif not isinstance(req.get("ids"), list) or not all(isinstance(i, int) for i in req["ids"]):
            raise ValueError(f"'ids' must be a list of integer sample ids; got {req.get('ids')!r}")
        ids = resolve_ids(req, dataset)
        check_ids(ids, len(dataset.y_train))
    except ValueError as err:
        raise RequestError(f"{where}: {err}") from None
    gone = sorted(set(ids) & deleted)
    if gone:
        raise RequestError(f"{where}: sample ids already deleted by an earlier request: {gone[:10]}"
                           + (f" (+{len(gone) - 10} more)" if len(gone) > 10 else ""))
    if not ids:
        raise RequestError(f"{where}: selects no training sample: empty forget set")
    return ids


def deleted_ids(requests: list[dict[str, Any]], dataset) -> set[int]:
    """Ids removed from the data by the dataset's `done` requests."""
    out: set[int] = set()
    for req in of_dataset(requests, dataset.name, "done"):
        out.update(resolve_ids(req, dataset))
    return out


def create(root: Path, dataset, *, ids: list[int] | None = None, ids_file: str | None = None,
           classes: list[str] | None = None) -> tuple[dict[str, Any], bool]:
    """Validate and record a pending request; returns (request, created) (False: already recorded)."""
    from unlearning.requests import read_ids_file

    given = [k for k, v in (("--ids", ids), ("--ids-file", ids_file), ("--classes", classes)) if v is not None]
    if len(given) != 1:
        raise RequestError(f"give exactly one of --ids, --ids-file, --classes; got {given or 'none'}")
    if ids_file is not None:
        try:
            ids = read_ids_file(ids_file)
        except ValueError as err:
            raise RequestError(f"--ids-file: {err}") from None
        if not ids:
            raise RequestError(f"--ids-file {ids_file}: names no sample id: empty forget set")
    if ids is not None:
        body: dict[str, Any] = {"dataset": dataset.name, "kind": "ids", "ids": sorted(ids)}
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise RequestError(f"duplicated sample ids: {dup[:10]}")
    else:
        parsed: list[int | str] = []
        for c in classes or []:
            parsed.append(int(c) if str(c).lstrip("-").isdigit() else str(c))
        body = {"dataset": dataset.name, "kind": "classes", "classes": parsed}
    body["hash"] = _hash(body)
    existing = load_all(root)
    for req in existing:
        if req["hash"] == body["hash"]:
            if req["status"] != "refused":
                return req, False
            # A refused request sent again goes back to the queue (the next run tries it again).
            mark(root, [req["hash"]], "pending", requeued_after=req.get("result"))
            return {**req, "status": "pending"}, True
    n_ids = len(check(body, dataset, deleted_ids(existing, dataset)))
    req = {**body, "status": "pending", "n_ids": n_ids, "source": ids_file or ("--ids" if ids else "--classes"),
           "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path = _folder(root) / f"{body['hash']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(req, indent=2) + "\n")
    req["_path"] = str(path)
    return req, True


def validate_pending(root: Path, dataset) -> tuple[list[dict[str, Any]], list[int], set[int]]:
    """Check every pending request of the dataset; returns (pending, their union of ids, deleted ids).

    Raises `RequestError` on the first bad request (malformed, unknown ids, overlap with deleted ids).
    """
    requests = load_all(root)
    deleted = deleted_ids(requests, dataset)
    pending = of_dataset(requests, dataset.name, "pending")
    union: set[int] = set()
    for req in pending:
        union.update(check(req, dataset, deleted))
    return pending, sorted(union), deleted


def mark(root: Path, hashes: list[str], status: str, **result: Any) -> None:
    """Set the status of requests (done / refused) and record what the run produced."""
    if status not in STATUSES:
        raise ValueError(f"'status' must be one of {list(STATUSES)}; got {status!r}")
    for h in hashes:
        path = _folder(root) / f"{h}.json"
        if not path.exists():
            continue
        req = json.loads(path.read_text())
        req["status"] = status
        req["result"] = {**result, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        path.write_text(json.dumps(req, indent=2) + "\n")
