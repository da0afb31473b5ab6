"""The data calibration may touch: the live request's retain set minus every excluded request's samples.

`build_universe` is the one place calibration meets the live request, and it takes only ids from it: the
training tensors are copied at the universe's ids (the live forget samples are never indexed), so every
later step (proxy draws, proxy models, the search) works on a `Dataset` that does not hold them at all.
Evaluation sets are the live request's test / val ids; for class-like requests the forgotten classes'
test examples are left out, since no universe model ever saw those classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data import Dataset
from ..requests import Split


@dataclass(frozen=True)
class Universe:
    """A compact dataset of the samples calibration may use, plus the shape of the live request.

    Attributes:
        dataset: train tensors hold the universe's samples only (position i is original id `ids[i]`).
        ids: original training id of each universe position.
        scenario: the live request's kind (class, subclass, random, ids, range).
        forget_size: samples the live request forgets.
        forget_fraction: its share of the live training set.
        class_count: classes it forgets (class requests), else None.
        test_idx, val_idx: evaluation ids into the dataset's test tensors.
    """

    dataset: Dataset
    ids: Tensor
    scenario: str
    forget_size: int
    forget_fraction: float
    class_count: int | None
    test_idx: Tensor
    val_idx: Tensor

    @property
    def key(self) -> str:
        """Content hash of the universe's ids (which samples proxy models may train on)."""
        return hashlib.sha256(self.ids.numpy().astype("int64").tobytes()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {"samples": len(self.ids), "scenario": self.scenario, "forget_size": self.forget_size,
                "forget_fraction": self.forget_fraction, "key": self.key}


def _excluded_mask(excluded: Sequence[Sequence[int]], n: int) -> Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    for i, ids in enumerate(excluded):
        t = torch.as_tensor(list(ids), dtype=torch.long)
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"excluded request {i}: sample ids must lie in [0, {n - 1}]")
        mask[t] = True
    return mask


def _kept(labels: Tensor, classes: list[int]) -> Tensor:
    return ~torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))


def build_universe(live: Split, excluded: Sequence[Sequence[int]] = ()) -> Universe:
    """The universe of a live request: its retain ids minus the ids of `excluded` requests (pending, done).

    Args:
        live: the live request's split; only its ids, classes and test / val ids are read.
        excluded: sample ids of other requests that proxies must avoid (and models never train on).

    Returns:
        The universe, holding no reference to the live split.
    """
    ds = live.dataset
    n = len(ds.y_train)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[live.retain_idx] = True
    keep &= ~_excluded_mask(excluded, n)
    ids = torch.nonzero(keep).flatten()
    if len(ids) < 2:
        raise ValueError(f"the live request and the excluded ones leave {len(ids)} samples to calibrate on")
    fine = None if ds.fine_train is None else ds.fine_train[ids]
    compact = dataclasses.replace(ds, x_train=ds.x_train[ids], y_train=ds.y_train[ids], fine_train=fine)
    test_idx, val_idx = live.test_idx, live.val_idx
    if live.forget_test_mask is not None:  # class, subclass, range: test examples of what only D_f had
        test_idx = test_idx[~live.forget_test_mask]
    if live.scenario in ("class", "subclass") and live.forget_classes:
        labels = ds.y_test if live.scenario == "class" else ds.fine_test
        val_idx = val_idx[_kept(labels[val_idx], live.forget_classes)]
    classes = len(live.forget_classes) if live.scenario == "class" and live.forget_classes else None
    return Universe(compact, ids, live.scenario, len(live.forget_idx), live.forget_fraction, classes,
                    test_idx, val_idx)


def request_kind(split: Split) -> dict[str, Any]:
    """What a calibration profile is valid for: the request's scenario and its size.

    class: the number of classes; random and range: the forget fraction (3 decimals); ids: the size
    rounded to a power of two (a profile tuned on 146 ids serves 128-181); subclass: one fine class.
    """
    out: dict[str, Any] = {"scenario": split.scenario}
    if split.scenario == "class":
        out["classes"] = len(split.forget_classes or [])
    elif split.scenario in ("random", "range"):
        out["fraction"] = round(split.forget_fraction, 3)
    elif split.scenario == "ids":
        out["size"] = 2 ** round(math.log2(len(split.forget_idx)))
    return out
