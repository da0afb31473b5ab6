"""Stage `version_data`: the data version under `data/` and the forget/retain split of this run.

`data/` (tracked with `dvc add`, hash in `data.dvc`) holds the dataset as materialised from the registry
(`.npy` arrays whose index is the stable sample id), `meta.json`, and `deletions.json`: the deletion
requests in this version (`pending`: forgotten by this run; `done`: removed earlier). With any deletion,
the version without the forgotten samples is there too (`x_retained.npy`, `y_retained.npy`,
`ids_retained.npy`). Files are rewritten only when their bytes change, and `.npy` is byte-stable (no
timestamps, unlike `.npz`), so an unchanged dataset keeps its hash and every content key built on it.

`python -m flows.prepare` (the DVC stage) turns `data/` + `params.request` into
`outputs/version_data/split.json`: pending deletion requests, when `data/deletions.json` has any, else the
params' request; ids removed by done requests are out of both sets. Later stages rebuild the same `Split`
from `data/` and that file.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import _common as C

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "fine_train", "fine_test")
RETAINED = ("x_retained", "y_retained", "ids_retained")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def materialise(root: Path, dataset, deletions: dict[str, list[dict[str, Any]]]) -> bool:
    """Write the data version under `data/`; returns whether any file changed.

    Args:
        root: project root.
        dataset: the loaded `unlearning.data.Dataset`.
        deletions: `{"pending": [...], "done": [...]}`, each item `{"hash", "kind", "ids"}` (resolved ids).
    """
    import json

    folder = root / C.DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for name in ARRAYS:
        value = getattr(dataset, name, None)
        if value is not None:
            files[f"{name}.npy"] = _npy_bytes(value.numpy())
    removed = sorted({i for group in deletions.values() for item in group for i in item["ids"]})
    if removed:
        keep = np.setdiff1d(np.arange(len(dataset.y_train)), np.asarray(removed, dtype=np.int64))
        files["x_retained.npy"] = _npy_bytes(dataset.x_train.numpy()[keep])
        files["y_retained.npy"] = _npy_bytes(dataset.y_train.numpy()[keep])
        files["ids_retained.npy"] = _npy_bytes(keep.astype(np.int64))
    meta = {"name": dataset.name, "task": dataset.task, "classes": dataset.classes,
            "mean": list(dataset.mean) if dataset.mean is not None else None,
            "std": list(dataset.std) if dataset.std is not None else None, "augment": dataset.augment,
            "fine_classes": dataset.fine_classes, "n_train": len(dataset.y_train), "n_test": len(dataset.y_test)}
    files["meta.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    files["deletions.json"] = (json.dumps(deletions, indent=2, sort_keys=True) + "\n").encode()
    changed = False
    for name, data in files.items():
        changed |= _write_if_changed(folder / name, data)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in files:
            stale.unlink()
            changed = True
    return changed


def read_dataset(root: Path):
    """The `Dataset` stored under `data/` (ids = positions, exactly as materialised)."""
    import json

    import torch

    from unlearning.data import Dataset

    folder = root / C.DATA_DIR
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"{folder}: no data version here; run `unlearn run` (or `dvc pull`) first")
    meta = json.loads((folder / "meta.json").read_text())
    arr = {n: torch.from_numpy(np.load(folder / f"{n}.npy")) for n in ARRAYS if (folder / f"{n}.npy").exists()}
    return Dataset(meta["name"], meta["task"], arr["x_train"], arr["y_train"], arr["x_test"], arr["y_test"],
                   meta["classes"], tuple(meta["mean"]) if meta["mean"] else None,
                   tuple(meta["std"]) if meta["std"] else None, meta["augment"], arr.get("fine_train"),
                   arr.get("fine_test"), meta.get("fine_classes"))


def read_deletions(root: Path) -> dict[str, list[dict[str, Any]]]:
    import json

    path = root / C.DATA_DIR / "deletions.json"
    return json.loads(path.read_text()) if path.exists() else {"pending": [], "done": []}


def make_split(dataset, request: dict[str, Any], removed: list[int]):
    """Resolve `request` on `dataset`, then drop ids removed by earlier deletions from both sides."""
    import torch

    from unlearning.config import RequestConfig
    from unlearning.requests import resolve

    split = resolve(RequestConfig.model_validate(request), dataset)
    if removed:
        gone = torch.tensor(sorted(removed), dtype=torch.long)
        split.forget_idx = split.forget_idx[~torch.isin(split.forget_idx, gone)]
        split.retain_idx = split.retain_idx[~torch.isin(split.retain_idx, gone)]
        if len(split.forget_idx) == 0:
            raise ValueError(f"request ({split.description}) selects only samples already deleted: "
                             "empty forget set")
    return split


def effective_request(params, deletions: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], str]:
    """The request this run forgets: the pending deletion requests, else `params.request`."""
    pending = deletions.get("pending") or []
    base = {"seed": params.request.seed, "val_fraction": params.request.val_fraction}
    if not pending:
        return params.request.model_dump(exclude_none=True), "params"
    if all(item["kind"] == "classes" for item in pending):
        classes = sorted({c for item in pending for c in item["classes"]}, key=str)
        return {**base, "classes": classes}, "deletion requests"
    ids = sorted({i for item in pending for i in item["ids"]})
    return {**base, "ids": ids}, "deletion requests"


def load_split(root: Path):
    """(Split, split.json contents) of the current run, rebuilt from `data/` and the split file."""
    info = C.read_json(root / C.SPLIT_FILE)
    return make_split(read_dataset(root), info["request"], info["removed_ids"]), info


def prepare(root: Path, params, parent_run_id: str | None = None) -> dict[str, Any]:
    """The DVC stage body: split of this data version, written to `outputs/version_data/split.json`.

    Returns:
        `{"split_file", "data_hash", "request_hash", "run_id", "summary"}`.
    """
    import mlflow

    from . import _dvc

    dataset = read_dataset(root)
    if dataset.name != params.data.name:
        raise ValueError(f"data/ holds {dataset.name!r} but params data.name is {params.data.name!r}; "
                         "run `unlearn run` to materialise the configured dataset")
    deletions = read_deletions(root)
    request, source = effective_request(params, deletions)
    removed = sorted({i for item in deletions.get("done") or [] for i in item["ids"]})
    split = make_split(dataset, request, removed)
    data_hash = _dvc.data_hash(root)
    info = {"data_hash": data_hash, "dataset": dataset.name, "request": request, "source": source,
            "requests": [item["hash"] for item in deletions.get("pending") or []],
            "request_hash": split.hash, "forget_ids": split.forget_idx.tolist(), "removed_ids": removed,
            "summary": split.summary()}
    C.write_json(root / C.SPLIT_FILE, info)
    tags = {"data_hash": data_hash, "request_hash": split.hash, "request.source": source,
            "requests": ",".join(info["requests"]), "data_touched": "none"}
    with C.stage_run(root, params, "version_data", run_name=f"version_data · {split.description}",
                     parent_run_id=parent_run_id, tags=tags) as run:
        mlflow.log_params(C.flatten({"data": params.data.model_dump(), "request": request}) | {
            "request.source": source})
        mlflow.log_metrics({"data/forget": len(split.forget_idx), "data/retain": len(split.retain_idx),
                            "data/removed": len(removed), "data/test": len(split.test_idx)})
        mlflow.log_dict(info["summary"], "split_summary.json")
    return {"split_file": C.SPLIT_FILE, "data_hash": data_hash, "request_hash": split.hash,
            "run_id": run.run_id, "summary": info["summary"], "source": source, "requests": info["requests"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.prepare", description="DVC stage version_data: "
                                     "the forget/retain split of the data version under data/.")
    parser.parse_args(argv)
    C.dvc_stage_env()
    root = Path.cwd()
    out = prepare(root, C.load(root))
    print(f"version_data: data {out['data_hash'][:12]}, request {out['request_hash']} ({out['source']}): "
          f"{out['summary']['forget']} forget / {out['summary']['retain']} retain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
