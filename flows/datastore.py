"""The data version under `data/`: the dataset as `.npy` arrays (index = stable sample id) plus metadata.

`meta.json` describes the dataset; `deletions.json` lists the deletion requests in this version
(`pending`: forgotten by this run; `done`: removed earlier). With any deletion, the version without the
forgotten samples is there too (`x_retained.npy`, `y_retained.npy`, `ids_retained.npy`). Files are
rewritten only when their bytes change, and `.npy` is byte-stable (no timestamps, unlike `.npz`), so an
unchanged dataset keeps its hash and every content key built on it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .settings import DATA_DIR

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
    folder = root / DATA_DIR
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
    import torch

    from unlearning.data import Dataset

    folder = root / DATA_DIR
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"{folder}: no data version here; run `unlearn run` (or `dvc pull`) first")
    meta = json.loads((folder / "meta.json").read_text())
    arr = {n: torch.from_numpy(np.load(folder / f"{n}.npy")) for n in ARRAYS if (folder / f"{n}.npy").exists()}
    return Dataset(meta["name"], meta["task"], arr["x_train"], arr["y_train"], arr["x_test"], arr["y_test"],
                   meta["classes"], tuple(meta["mean"]) if meta["mean"] else None,
                   tuple(meta["std"]) if meta["std"] else None, meta["augment"], arr.get("fine_train"),
                   arr.get("fine_test"), meta.get("fine_classes"))


def content_hash(root: Path) -> str:
    """The data version: an md5 over the names and bytes of every file under `data/`."""
    h = hashlib.md5()
    folder = root / DATA_DIR
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(hashlib.md5(path.read_bytes()).digest())
    return h.hexdigest()
