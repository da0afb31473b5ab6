"""Forget requests: resolve what to forget into disjoint forget / retain / val / test index sets.

Resolution is deterministic (seeded) and the resulting `Split` carries a content hash of the dataset
name and the exact forgotten ids, so the same request identifies itself the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .config import RequestConfig
from .data import Dataset, Samples


@dataclass
class Split:
    """A dataset cut by a forget request. Indices are positions in the train (or test) tensors."""

    dataset: Dataset
    scenario: str  # "class" | "subclass" | "random" | "ids" | "range"
    forget_idx: Tensor
    retain_idx: Tensor
    test_idx: Tensor  # evaluation test set (the validation part excluded)
    val_idx: Tensor  # carved from the test split for methods that need held-out data
    forget_classes: list[int] | None = None  # class / subclass scenarios (subclass: fine ids)
    forget_test_mask: Tensor | None = None  # over test_idx: examples of the forgotten classes / range
    description: str = ""
    # Classes with no sample in forget + retain: the model's training set lacks them (a calibration universe
    # without the live request's class, a class a done request removed). None: found from the labels here.
    absent_classes: list[int] | None = None

    def __post_init__(self) -> None:
        if self.absent_classes is None:
            ds = self.dataset
            if ds.task != "classification":
                self.absent_classes = []
            else:
                held = torch.unique(ds.y_train[torch.cat([self.forget_idx, self.retain_idx])]).tolist()
                self.absent_classes = sorted(set(range(ds.num_classes)) - set(held))

    @property
    def hash(self) -> str:
        """Content hash of (dataset, forgotten ids)."""
        h = hashlib.sha256(self.dataset.name.encode())
        h.update(self.forget_idx.cpu().numpy().astype("int64").tobytes())
        return h.hexdigest()[:12]

    @property
    def forget_fraction(self) -> float:
        return len(self.forget_idx) / (len(self.forget_idx) + len(self.retain_idx))

    def _train(self, idx: Tensor, device: torch.device | str) -> Samples:
        ds = self.dataset
        return Samples(ds.x_train[idx], ds.y_train[idx], idx.clone(), ds.mean, ds.std, ds.augment).to(device)

    def _test(self, idx: Tensor, device: torch.device | str) -> Samples:
        ds = self.dataset
        return Samples(ds.x_test[idx], ds.y_test[idx], idx.clone(), ds.mean, ds.std, ds.augment).to(device)

    def forget(self, device: torch.device | str = "cpu") -> Samples:
        return self._train(self.forget_idx, device)

    def retain(self, device: torch.device | str = "cpu") -> Samples:
        return self._train(self.retain_idx, device)

    def train(self, device: torch.device | str = "cpu") -> Samples:
        """The full training set D (forget and retain)."""
        return self._train(torch.sort(torch.cat([self.forget_idx, self.retain_idx])).values, device)

    def test(self, device: torch.device | str = "cpu") -> Samples:
        return self._test(self.test_idx, device)

    def val(self, device: torch.device | str = "cpu") -> Samples:
        return self._test(self.val_idx, device)

    def forget_test(self, device: torch.device | str = "cpu") -> Samples | None:
        """Test examples of the forgotten classes (or target range); None for random / id requests."""
        if self.forget_test_mask is None:
            return None
        return self._test(self.test_idx[self.forget_test_mask], device)

    def retain_test(self, device: torch.device | str = "cpu") -> Samples | None:
        if self.forget_test_mask is None:
            return None
        return self._test(self.test_idx[~self.forget_test_mask], device)

    def without(self, removed: list[int]) -> Split:
        """This split minus ids deleted earlier (out of both forget and retain sets)."""
        if not removed:
            return self
        gone = torch.tensor(sorted(removed), dtype=torch.long)
        forget = self.forget_idx[~torch.isin(self.forget_idx, gone)]
        if len(forget) == 0:
            raise ValueError(f"request ({self.description}) selects only samples already deleted: empty forget set")
        retain = self.retain_idx[~torch.isin(self.retain_idx, gone)]
        return dataclasses.replace(self, forget_idx=forget, retain_idx=retain)

    def forget_test_ids(self) -> list[int] | None:
        """Test indices of the forgotten classes / range (None for sample requests)."""
        return None if self.forget_test_mask is None else self.test_idx[self.forget_test_mask].tolist()

    def summary(self) -> dict[str, object]:
        """JSON-able description: scenario, sizes, hash."""
        return {"dataset": self.dataset.name, "scenario": self.scenario, "description": self.description,
                "hash": self.hash, "forget": len(self.forget_idx), "retain": len(self.retain_idx),
                "test": len(self.test_idx), "val": len(self.val_idx), "forget_classes": self.forget_classes}


def _class_index(name: int | str, classes: list[str], what: str) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        if not 0 <= name < len(classes):
            raise ValueError(f"unknown {what} {name}: must be in [0, {len(classes) - 1}]")
        return name
    if str(name) in classes:
        return classes.index(str(name))
    raise ValueError(f"unknown {what} {name!r}; valid names: {classes}")


def read_ids_file(path: str | Path) -> list[int]:
    """Read sample ids: one per line or comma/space separated; '#' starts a comment.

    Errors name the file and the line number, never the file's content (the path may be a file the
    caller should not see, e.g. a secret someone pointed the request at).
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"ids_file not found: {p}")
    if not p.is_file():
        raise ValueError(f"ids_file is not a regular file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"ids_file is not a UTF-8 text file: {p}") from None
    ids: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for tok in line.split("#", 1)[0].replace(",", " ").split():
            try:
                ids.append(int(tok))
            except ValueError:
                raise ValueError(f"{p}:{lineno}: not an integer sample id (ids are integers, one per line "
                                 "or comma/space separated; '#' starts a comment)") from None
    return ids


def check_ids(ids: list[int], n_train: int) -> Tensor:
    """Validate explicit sample ids: in range, no duplicates, not empty."""
    if not ids:
        raise ValueError("the request names no sample ids: empty forget set")
    t = torch.tensor(ids, dtype=torch.long)
    bad = t[(t < 0) | (t >= n_train)]
    if len(bad):
        raise ValueError(f"sample ids out of range [0, {n_train - 1}]: {bad[:10].tolist()}"
                         + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""))
    uniq, counts = torch.unique(t, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicated sample ids: {uniq[counts > 1][:10].tolist()}")
    return torch.sort(t).values


def resolve(request: RequestConfig, dataset: Dataset) -> Split:
    """Resolve a request against a dataset into a `Split` (deterministic given `request.seed`)."""
    n = len(dataset.y_train)
    gen = torch.Generator().manual_seed(request.seed)
    y = dataset.y_train
    forget_classes: list[int] | None = None
    test_mask: Tensor | None = None
    kind = request.kind

    if kind == "classes":
        if dataset.task != "classification":
            raise ValueError("class requests need a classification dataset; use target_range or ids")
        forget_classes = sorted({_class_index(c, dataset.classes, "class") for c in request.classes})
        if not forget_classes:
            raise ValueError("request.classes is empty: empty forget set")
        mask = torch.isin(y, torch.tensor(forget_classes))
        test_mask_full = torch.isin(dataset.y_test, torch.tensor(forget_classes))
        scenario, desc = "class", f"classes {[dataset.classes[c] for c in forget_classes]}"
    elif kind == "subclass":
        if dataset.fine_train is None:
            raise ValueError(f"subclass requests need coarse labels with fine labels kept (cifar100 with "
                             f"data.labels: coarse); dataset {dataset.name!r} has none")
        fine = _class_index(request.subclass, dataset.fine_classes or [], "subclass")
        forget_classes = [fine]
        mask = dataset.fine_train == fine
        test_mask_full = dataset.fine_test == fine
        scenario, desc = "subclass", f"subclass {dataset.fine_classes[fine]!r}"
    elif kind == "random":
        k = int(round(request.random.fraction * n))
        if k == 0:
            raise ValueError(f"request.random.fraction {request.random.fraction} of {n} samples: empty forget set")
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=gen)[:k]] = True
        test_mask_full = None
        scenario, desc = "random", f"random {request.random.fraction:.1%}"
    elif kind in ("ids", "ids_file"):
        ids = request.ids if kind == "ids" else read_ids_file(request.ids_file)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[check_ids(ids, n)] = True
        test_mask_full = None
        scenario, desc = "ids", f"{int(mask.sum())} sample ids"
    else:  # target_range
        if dataset.task != "regression":
            raise ValueError("target_range requests need a regression dataset (data.task: regression)")
        lo, hi = request.target_range
        mask = (y >= lo) & (y <= hi)
        test_mask_full = (dataset.y_test >= lo) & (dataset.y_test <= hi)
        scenario, desc = "range", f"targets in [{lo}, {hi}]"

    forget_idx = torch.nonzero(mask).flatten()
    retain_idx = torch.nonzero(~mask).flatten()
    if len(forget_idx) == 0:
        raise ValueError(f"request ({desc}) selects no training samples: empty forget set")
    if len(retain_idx) == 0:
        raise ValueError(f"request ({desc}) forgets every training sample: nothing would be retained")

    # Validation carved from test, stratified by nothing but a seeded permutation; test keeps the rest.
    n_test = len(dataset.y_test)
    perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(10_000 + request.seed))
    n_val = max(1, int(round(request.val_fraction * n_test)))
    val_idx, test_idx = torch.sort(perm[:n_val]).values, torch.sort(perm[n_val:]).values
    if test_mask_full is not None:
        test_mask = test_mask_full[test_idx]
    return Split(dataset, scenario, forget_idx, retain_idx, test_idx, val_idx, forget_classes, test_mask, desc)


def split_from_ids(dataset: Dataset, *, scenario: str, forget_ids: list[int], removed_ids: list[int],
                   val_ids: list[int], forget_test_ids: list[int] | None, forget_classes: list[int] | None,
                   description: str) -> Split:
    """Rebuild a resolved `Split` from its ids (what a pipeline stage stored), without resolving again.

    Retain is every training id neither forgotten nor removed earlier; test is every test id not in val.
    """
    n, n_test = len(dataset.y_train), len(dataset.y_test)
    forget = torch.tensor(sorted(forget_ids), dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[forget] = False
    keep[torch.tensor(removed_ids, dtype=torch.long)] = False
    in_val = torch.zeros(n_test, dtype=torch.bool)
    in_val[torch.tensor(val_ids, dtype=torch.long)] = True
    test_idx = torch.nonzero(~in_val).flatten()
    mask = None
    if forget_test_ids is not None:
        mask = torch.isin(test_idx, torch.tensor(forget_test_ids, dtype=torch.long))
    return Split(dataset, scenario, forget, torch.nonzero(keep).flatten(), test_idx,
                 torch.nonzero(in_val).flatten(), forget_classes, mask, description)
