"""Deletion requests: validated, content-hashed entries of the ledger (`flows.ledger`), pending until a run.

`unlearn request --ids 1,2,3 | --ids-file FILE | --classes 3` validates a request against the dataset
and records it in the ledger of the tracking store (status `pending`), so every clone and worker sharing
that store sees it. A pipeline run takes every pending request of its dataset, forgets the union, and a
request becomes `done` in the step that moves `production` to a version honouring it (`flows.production`),
or `refused` (with the gate failures). `unlearn request --cancel HASH` withdraws a pending or refused one.
Ids are sample ids: indices in the training tensors, the same ids everywhere (`unlearning.data`). A bad
request is rejected before anything runs, with the problem named: unknown / out-of-range / already-deleted
ids, an empty request, one that would leave no training sample.
"""

from __future__ import annotations

from typing import Any

from .ledger import Ledger, body_hash


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


def load_all(ledger: Ledger, dataset: str | None = None) -> list[dict[str, Any]]:
    """Every request of the ledger (of `dataset`), oldest first."""
    return ledger.entries(dataset)


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

    where = f"request {req.get('hash', '?')}"
    try:
        if req["kind"] == "classes":
            if dataset.task != "classification":
                raise ValueError(f"class requests need a classification dataset; {dataset.name} is "
                                 f"{dataset.task}")
            if not req.get("classes"):
                raise ValueError("the request names no class: empty forget set")
        elif not isinstance(req.get("ids"), list) or not all(isinstance(i, int) for i in req["ids"]):
            raise ValueError("'ids' must be a list of integer sample ids")
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


def _leaves_samples(where: str, forgotten: set[int], dataset) -> None:
    """Refuse a forget set that would leave no training sample (no model can be trained or evaluated)."""
    n = len(dataset.y_train)
    if len(forgotten) >= n:
        raise RequestError(f"{where}: would delete every training sample ({n} of {n}, counting the earlier "
                           "and pending requests); nothing would be left to train on")


def deleted_ids(requests: list[dict[str, Any]], dataset) -> set[int]:
    """Ids removed from the data by the dataset's `done` requests."""
    out: set[int] = set()
    for req in of_dataset(requests, dataset.name, "done"):
        out.update(resolve_ids(req, dataset))
    return out


def create(ledger: Ledger, dataset, *, ids: list[int] | None = None, ids_file: str | None = None,
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
    body["hash"] = body_hash(body)
    alone = check(body, dataset, set())  # what the request alone can get wrong, before the store is opened
    existing = load_all(ledger)
    for req in existing:
        if req["hash"] == body["hash"]:
            if req["status"] not in ("refused", "cancelled"):
                return req, False
            # A refused or cancelled request sent again goes back to the queue (the next run tries it again).
            _, union, deleted = validate_pending(ledger, dataset, existing)
            _leaves_samples(f"request {req['hash']}", set(union) | deleted | set(check(req, dataset, deleted)),
                            dataset)
            ledger.set_status([req["hash"]], "pending", requeued_after=req.get("result"))
            return {**req, "status": "pending"}, True
    _, union, deleted = validate_pending(ledger, dataset, existing)
    _leaves_samples(f"request {body['hash']}", set(union) | deleted | set(alone), dataset)
    new = check(body, dataset, deleted)
    source = "--ids-file" if ids_file else ("--ids" if ids is not None else "--classes")
    req = ledger.add({k: v for k, v in body.items() if k != "hash"}, n_ids=len(new), source=source)
    return req, True


def validate_pending(ledger: Ledger, dataset, requests: list[dict[str, Any]] | None = None
                     ) -> tuple[list[dict[str, Any]], list[int], set[int]]:
    """Check every pending request of the dataset; returns (pending, their union of ids, deleted ids).

    Raises `RequestError` on the first bad request (unknown ids, overlap with deleted ids) and when the
    pending requests together would leave no training sample.
    """
    requests = load_all(ledger) if requests is None else requests
    deleted = deleted_ids(requests, dataset)
    pending = of_dataset(requests, dataset.name, "pending")
    union: set[int] = set()
    for req in pending:
        union.update(check(req, dataset, deleted))
    if pending:
        _leaves_samples(f"pending requests {', '.join(r['hash'] for r in pending)}", union | deleted, dataset)
    return pending, sorted(union), deleted


def cancel(ledger: Ledger, request_hash: str, by: str) -> dict[str, Any]:
    """Withdraw a pending or refused request; a done one cannot be undone (its data is gone)."""
    req = ledger.get(request_hash.strip())
    if req is None:
        raise RequestError(f"--cancel: no deletion request {request_hash!r} in the ledger "
                           "(`unlearn status` lists them)")
    if req["status"] == "done":
        raise RequestError(f"--cancel: request {req['hash']} is done (production honours it since "
                           f"v{(req.get('result') or {}).get('version', '?')}); a done deletion cannot be cancelled")
    if req["status"] == "cancelled":
        return req
    ledger.set_status([req["hash"]], "cancelled", by=by, was=req["status"])
    return {**req, "status": "cancelled"}


def mark(ledger: Ledger, hashes: list[str], status: str, **result: Any) -> list[str]:
    """Set the status of requests (done / refused / pending) and record what the run produced."""
    return ledger.set_status(hashes, status, **result)
