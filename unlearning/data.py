"""Core data types: a whole `Dataset` as tensors and on-device `Samples` views (loaders: `datasets.py`).

Every dataset becomes tensors once: uint8 images (or float32 tabular features), int64 labels (float32
targets for regression). The stable id of a training example is its index in the training tensors.
`Samples` batches by index permutation over tensors that already live on the device; normalisation
and augmentation (crop + flip) run on the device per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Dataset:
    """A whole dataset as tensors (CPU until moved). `fine_*` carry fine labels when `y` is coarse."""

    name: str
    task: str  # "classification" | "regression"
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: tuple[float, ...] | None = None  # per-channel normalisation of uint8 images (in [0, 1] units)
    std: tuple[float, ...] | None = None
    augment: bool = False  # crop + flip is meaningful for natural images only
    fine_train: Tensor | None = None
    fine_test: Tensor | None = None
    fine_classes: list[str] | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return len(self.classes) if self.task == "classification" else 1

    def train(self, device: torch.device | str = "cpu") -> Samples:
        ids = torch.arange(len(self.x_train))
        return Samples(self.x_train, self.y_train, ids, self.mean, self.std, self.augment).to(device)

    def test(self, device: torch.device | str = "cpu") -> Samples:
        ids = torch.arange(len(self.x_test))
        return Samples(self.x_test, self.y_test, ids, self.mean, self.std, self.augment).to(device)


@dataclass
class Samples:
    """A set of examples on one device, with per-batch normalisation and optional augmentation.

    `ids` are stable training ids (test indices for test sets). `x` keeps its storage dtype (uint8 images)
    until a batch is prepared, which keeps big image sets small enough to stay on the GPU.
    """

    x: Tensor
    y: Tensor
    ids: Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augmentable: bool = False
    _norm: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> Samples:
        """The same samples on `device` (no copy when already there)."""
        return Samples(self.x.to(device), self.y.to(device), self.ids.to(device), self.mean, self.std,
                       self.augmentable)

    def subset(self, idx: Tensor) -> Samples:
        """Samples at positions `idx` (positions in this set, not ids)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        return Samples(self.x[idx], self.y[idx], self.ids[idx], self.mean, self.std, self.augmentable)

    def random_subset(self, n: int, generator: torch.Generator) -> Samples:
        """A seeded random `n` of these samples, kept in their order (all of them when n >= len)."""
        if n >= len(self):
            return self
        return self.subset(torch.sort(torch.randperm(len(self), generator=generator)[:n]).values)

    def with_labels(self, y: Tensor) -> Samples:
        """Same inputs, other labels (random-label style methods)."""
        return Samples(self.x, y.to(self.device), self.ids, self.mean, self.std, self.augmentable)

    def prepare(self, xb: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Turn stored inputs into the float model input: scale, normalise, then optionally augment."""
        if xb.dtype == torch.uint8:
            xb = xb.float().div_(255.0)
            if self.mean is not None:
                if self._norm is None or self._norm[0].device != xb.device:
                    shape = (1, -1) + (1,) * (xb.dim() - 2)
                    mean = torch.tensor(self.mean, device=xb.device).view(shape)
                    std = torch.tensor(self.std, device=xb.device).view(shape)
                    self._norm = (mean, std)
                xb = (xb - self._norm[0]) / self._norm[1]
        else:
            xb = xb.float()
        if augment and self.augmentable:
            xb = crop_flip(xb, generator)
        return xb

    def inputs(self) -> Tensor:
        """All inputs, prepared, without augmentation (evaluation)."""
        return self.prepare(self.x)

    def batches(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                augment: bool = False, drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs, labels) batches by index permutation; one pass over the set."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.device, non_blocking=True)
        else:
            order = torch.arange(n, device=self.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield self.prepare(self.x[idx], augment, generator), self.y[idx]


def concat(*parts: Samples) -> Samples:
    """Concatenate sample sets that share a dataset."""
    first = parts[0]
    return Samples(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]),
                   torch.cat([p.ids for p in parts]), first.mean, first.std, first.augmentable)


def crop_flip(x: Tensor, generator: torch.Generator | None = None, pad: int = 4) -> Tensor:
    """Random crop with zero padding and horizontal flip, per sample, on x's device. x: [B, C, H, W].

    The offsets come from a CPU generator (the same draws on every device); their copies to a GPU are
    non-blocking, since a blocking copy waits for the queued kernels and stalls the loop once per batch.
    """
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B,1,H,1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B,1,1,W]
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[bidx, cidx, rows, cols]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device, non_blocking=True)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out)
