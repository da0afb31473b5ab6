"""Stage `version_data`: the data version under `data/` and the split of this run, resolved once.

The dataset is materialised from the registry minus the ids of done deletion requests (`datastore`);
the request of this run is the pending deletion requests, else `params.request`. It is resolved here,
once, and written as a `SplitRecord` (sample ids and hashes); later stages rebuild the same `Split` from
`data/` and that record with `load_split`, never resolving the request again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import datastore, deletions
from .context import StageContext
from .ledger import Ledger
from .production import reconcile
from .records import SplitRecord
from .settings import SPLIT_FILE, is_service, registered_model_name


def effective_request(params: Any, pending: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The request this run forgets: the pending deletion requests, else `params.request`."""
    base = {"seed": params.request.seed, "val_fraction": params.request.val_fraction}
    if not pending:
        return params.request.model_dump(exclude_none=True), "params"
    if all(item["kind"] == "classes" for item in pending):
        classes = sorted({c for item in pending for c in item["classes"]}, key=str)
        return {**base, "classes": classes}, "deletion requests"
    ids = sorted({i for item in pending for i in item["ids"]})
    return {**base, "ids": ids}, "deletion requests"


def _manifest(ledger: Ledger, dataset: Any, service: bool) -> dict[str, list[dict[str, Any]]]:
    """Done and (service runs only: an experiment processes none) pending deletion requests, ids resolved."""
    requests = deletions.load_all(ledger, dataset.name)
    pending = deletions.validate_pending(ledger, dataset, requests)[0] if service else []  # bad ones raise
    done = deletions.of_dataset(requests, dataset.name, "done")

    def item(r: dict[str, Any]) -> dict[str, Any]:
        return {"hash": r["hash"], "kind": r["kind"], "classes": r.get("classes"),
                "ids": deletions.resolve_ids(r, dataset)}

    return {"pending": [item(r) for r in pending], "done": [item(r) for r in done]}


def version_data(ctx: StageContext) -> SplitRecord:
    """Materialise `data/`, resolve this run's split once, write the `SplitRecord`, log an MLflow run."""
    import mlflow

    from unlearning.config import RequestConfig
    from unlearning.datasets import load_dataset
    from unlearning.requests import resolve

    from .tracking import flatten, stage_run

    root, params = ctx.root, ctx.params
    dataset = load_dataset(params.data.name, params.data.root, params.data.download, **params.data.options())
    ledger = Ledger(root, params)
    if is_service(params):
        reconcile(ledger, params, registered_model_name(params))  # finish a promotion a crash cut short
    manifest = _manifest(ledger, dataset, is_service(params))
    datastore.materialise(root, dataset, manifest)
    request, source = effective_request(params, manifest["pending"])
    removed = sorted({i for item in manifest["done"] for i in item["ids"]})
    split = resolve(RequestConfig.model_validate(request), dataset).without(removed)
    record = SplitRecord(
        dataset=dataset.name, data_hash=datastore.content_hash(root), source=source,
        requests=[item["hash"] for item in manifest["pending"]], request=request, request_hash=split.hash,
        removed_requests=sorted(item["hash"] for item in manifest["done"]),
        scenario=split.scenario, description=split.description, forget_ids=split.forget_idx.tolist(),
        removed_ids=removed, val_ids=split.val_idx.tolist(), forget_test_ids=split.forget_test_ids(),
        forget_classes=split.forget_classes, summary=split.summary())
    record.write(root / SPLIT_FILE)
    tags = {**record.lineage(), "request.source": source, "data_touched": "none"}
    with stage_run(root, params, "version_data", run_name=f"version_data · {split.description}",
                   parent_run_id=ctx.parent_run_id, tags=tags):
        mlflow.log_params(flatten({"data": params.data.model_dump(), "request": request}) | {"request.source": source})
        mlflow.log_metrics({"data/forget": len(split.forget_idx), "data/retain": len(split.retain_idx),
                            "data/removed": len(removed), "data/test": len(split.test_idx)})
        mlflow.log_dict(record.summary, "split_summary.json")
    return record


def load_split(root: Path) -> tuple[Any, SplitRecord]:
    """(Split, SplitRecord) of the current run, rebuilt from `data/` and the record: no resolution."""
    from unlearning.requests import split_from_ids

    record = SplitRecord.read(root / SPLIT_FILE)
    split = split_from_ids(datastore.read_dataset(root), scenario=record.scenario, forget_ids=record.forget_ids,
                           removed_ids=record.removed_ids, val_ids=record.val_ids,
                           forget_test_ids=record.forget_test_ids, forget_classes=record.forget_classes,
                           description=record.description)
    return split, record
