"""Dataset registry and on-device sample views.

Every dataset becomes tensors once: uint8 images (or float32 tabular features), int64 labels (float32
targets for regression). The stable id of a training example is its index in the training tensors.
`Samples` batches by index permutation over tensors that already live on the device; normalisation
and augmentation (crop + flip) run on the device per batch.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .registry import Registry

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
register_dataset = DATASETS.register

DEFAULT_ROOT_ENV = "UNLEARNING_DATA_ROOT"


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
            order = torch.randperm(n, generator=generator).to(self.device)
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
    """Random crop with zero padding and horizontal flip, per sample, on x's device. x: [B, C, H, W]."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B,1,H,1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B,1,1,W]
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[bidx, cidx, rows, cols]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Dataset root: the configured one, else $UNLEARNING_DATA_ROOT, else ./datasets."""
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get(DEFAULT_ROOT_ENV, "datasets"))


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False,
                 **options: object) -> Dataset:
    """Load a registered dataset by name (see `DATASETS.names()`)."""
    return DATASETS.get(name)(root=root, download=download, **options)


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    xf = x.float().div(255.0)
    dims = [0] + list(range(2, xf.dim()))
    return tuple(xf.mean(dims).tolist()), tuple(xf.std(dims).clamp_min(1e-3).tolist())


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = y if y.dtype.kind in "iu" else None
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(te)


# --------------------------------------------------------------------------- embedded (scikit-learn)

@register_dataset("digits")
def digits(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """scikit-learn digits: 1,797 8x8 grey images, 10 classes; a fixed stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]  # [N,1,8,8]
    tr, te = _stratified_split(bunch.target, 0.2, seed=0)
    x = torch.from_numpy(images)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    mean, std = _channel_stats(x[tr])
    return _finish("digits", task, x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], mean, std, False)


@register_dataset("diabetes")
def diabetes(root: object = None, download: bool = False, task: str = "regression") -> Dataset:
    """scikit-learn diabetes: 442 patients, 10 standardised features, a disease-progression target."""
    from sklearn.datasets import load_diabetes

    if task != "regression":
        raise ValueError(f"'task' of diabetes must be 'regression'; got {task!r}")
    bunch = load_diabetes()
    tr, te = _stratified_split(bunch.target, 0.2, seed=0)
    x = bunch.data.astype(np.float32)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    x = (x - mu) / sd
    y = torch.from_numpy(bunch.target.astype(np.float32))
    xt = torch.from_numpy(x)
    return Dataset("diabetes", "regression", xt[tr], y[tr], xt[te], y[te], [])


def _finish(name: str, task: str, x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor,
            classes: list[str], mean: tuple[float, ...], std: tuple[float, ...], augment: bool) -> Dataset:
    """Build a Dataset; `task: regression` turns class indices into numeric targets (digit value)."""
    if task == "regression":
        return Dataset(name, "regression", x_tr, y_tr.float(), x_te, y_te.float(), [], mean, std, augment)
    if task != "classification":
        raise ValueError(f"'task' must be one of ['classification', 'regression']; got {task!r}")
    return Dataset(name, "classification", x_tr, y_tr, x_te, y_te, classes, mean, std, augment)


# --------------------------------------------------------------------------- torchvision layouts

def _missing(name: str, expected: list[Path], hint: str = "") -> FileNotFoundError:
    paths = "\n  ".join(str(p) for p in expected)
    return FileNotFoundError(
        f"{name}: data not found. Expected one of:\n  {paths}\n"
        f"Set data.root to the folder that holds it (or ${DEFAULT_ROOT_ENV}), or data.download: true "
        f"where the internet is reachable.{hint}"
    )


def _read_idx(path_base: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (torchvision's raw/ layout)."""
    if path_base.exists():
        data = path_base.read_bytes()
    else:
        data = gzip.decompress(Path(str(path_base) + ".gz").read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_dataset(name: str, folder: str, classes: list[str], root: object, download: bool,
                 task: str) -> Dataset:
    base = resolve_root(root) / folder / "raw"
    files = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    have = all((base / f).exists() or (base / f"{f}.gz").exists() for f in files)
    if not have and download:
        import torchvision

        cls = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}[folder]
        cls(str(resolve_root(root)), train=True, download=True)
        cls(str(resolve_root(root)), train=False, download=True)
    elif not have:
        raise _missing(name, [base / f"{f}.gz" for f in files])
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(_read_idx(base / f).copy()) for f in files)
    x_tr, x_te = x_tr[:, None], x_te[:, None]
    mean, std = _channel_stats(x_tr)
    return _finish(name, task, x_tr, y_tr.long(), x_te, y_te.long(), classes, mean, std, False)


@register_dataset("mnist")
def mnist(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """MNIST from `<root>/MNIST/raw/*[.gz]`; `task: regression` predicts the digit value."""
    return _idx_dataset("mnist", "MNIST", [str(i) for i in range(10)], root, download, task)


@register_dataset("fashion_mnist")
def fashion_mnist(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """Fashion-MNIST from `<root>/FashionMNIST/raw/*[.gz]`."""
    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    return _idx_dataset("fashion_mnist", "FashionMNIST", classes, root, download, task)


def _cifar_pickles(root: object, download: bool, folder: str, tv_name: str) -> Path:
    base = resolve_root(root) / folder
    if not base.exists() and download:
        import torchvision

        cls = getattr(torchvision.datasets, tv_name)
        cls(str(resolve_root(root)), train=True, download=True)
        cls(str(resolve_root(root)), train=False, download=True)
    if not base.exists():
        raise _missing(tv_name.lower(), [base])
    return base


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


@register_dataset("cifar10")
def cifar10(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """CIFAR-10 from torchvision's python pickles under `<root>/cifar-10-batches-py`."""
    base = _cifar_pickles(root, download, "cifar-10-batches-py", "CIFAR10")
    train = [_unpickle(base / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(base / "test_batch")
    meta = _unpickle(base / "batches.meta")
    x_tr = torch.from_numpy(np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32))
    y_tr = torch.tensor(sum((list(b["labels"]) for b in train), []), dtype=torch.long)
    x_te = torch.from_numpy(np.asarray(test["data"]).reshape(-1, 3, 32, 32))
    y_te = torch.tensor(test["labels"], dtype=torch.long)
    mean, std = _channel_stats(x_tr)
    return _finish("cifar10", task, x_tr, y_tr, x_te, y_te, list(meta["label_names"]), mean, std, True)


@register_dataset("cifar100")
def cifar100(root: object = None, download: bool = False, task: str = "classification",
             labels: str = "fine") -> Dataset:
    """CIFAR-100; `labels: coarse` gives CIFAR-20 (the 20 superclasses) and keeps fine labels for sub-class requests."""
    if labels not in ("fine", "coarse"):
        raise ValueError(f"'labels' of cifar100 must be one of ['fine', 'coarse']; got {labels!r}")
    base = _cifar_pickles(root, download, "cifar-100-python", "CIFAR100")
    train, test, meta = _unpickle(base / "train"), _unpickle(base / "test"), _unpickle(base / "meta")
    x_tr = torch.from_numpy(np.asarray(train["data"]).reshape(-1, 3, 32, 32))
    x_te = torch.from_numpy(np.asarray(test["data"]).reshape(-1, 3, 32, 32))
    fine_tr = torch.tensor(train["fine_labels"], dtype=torch.long)
    fine_te = torch.tensor(test["fine_labels"], dtype=torch.long)
    mean, std = _channel_stats(x_tr)
    if labels == "fine":
        return _finish("cifar100", task, x_tr, fine_tr, x_te, fine_te, list(meta["fine_label_names"]),
                       mean, std, True)
    y_tr = torch.tensor(train["coarse_labels"], dtype=torch.long)
    y_te = torch.tensor(test["coarse_labels"], dtype=torch.long)
    ds = _finish("cifar100", task, x_tr, y_tr, x_te, y_te, list(meta["coarse_label_names"]), mean, std, True)
    ds.fine_train, ds.fine_test, ds.fine_classes = fine_tr, fine_te, list(meta["fine_label_names"])
    return ds


@register_dataset("svhn")
def svhn(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """SVHN (train + test .mat files) through torchvision, from `<root>/`."""
    import torchvision

    base = resolve_root(root)
    files = [base / "train_32x32.mat", base / "test_32x32.mat"]
    if not all(f.exists() for f in files) and not download:
        raise _missing("svhn", files)
    tr = torchvision.datasets.SVHN(str(base), split="train", download=download)
    te = torchvision.datasets.SVHN(str(base), split="test", download=download)
    x_tr, x_te = torch.from_numpy(tr.data), torch.from_numpy(te.data)
    y_tr, y_te = torch.from_numpy(tr.labels.astype(np.int64)), torch.from_numpy(te.labels.astype(np.int64))
    mean, std = _channel_stats(x_tr)
    return _finish("svhn", task, x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)], mean, std, False)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@register_dataset("cifar10_jpeg")
def cifar10_jpeg(root: object = None, download: bool = False, task: str = "classification",
                 path: str | None = None) -> Dataset:
    """CIFAR-10 re-encoded as JPEG (`cifar10-jpeg.tar.gz`); decoded once, then cached as uint8 tensors."""
    archive = Path(path) if path else resolve_root(root) / "cifar10-jpeg.tar.gz"
    cache = _cache_dir() / f"cifar10_jpeg-{archive.stat().st_size if archive.exists() else 0}.pt"
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
    else:
        if not archive.exists():
            raise _missing("cifar10_jpeg", [archive])
        blob = _decode_cifar_jpeg(archive)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(cache)  # atomic: a crash never leaves a half-written cache
    mean, std = _channel_stats(blob["x_train"])
    return _finish("cifar10_jpeg", task, blob["x_train"], blob["y_train"], blob["x_test"], blob["y_test"],
                   CIFAR10_CLASSES, mean, std, True)


def _cache_dir() -> Path:
    return Path(os.environ.get("UNLEARNING_CACHE", Path.home() / ".cache" / "unlearning"))


def _decode_cifar_jpeg(archive: Path) -> dict[str, Tensor]:
    """Decode every JPEG of the archive, sorted by split, class folder and file name (stable ids)."""
    from PIL import Image

    items: dict[str, list[tuple[str, int, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or not member.name.endswith(".jpg") or len(parts) < 3:
                continue
            split, cls = parts[-3], parts[-2]
            if split not in items or cls not in CIFAR10_CLASSES:
                continue
            raw = tar.extractfile(member).read()
            img = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.uint8)
            items[split].append((member.name, CIFAR10_CLASSES.index(cls), img.transpose(2, 0, 1)))
    out: dict[str, Tensor] = {}
    for split, rows in items.items():
        rows.sort(key=lambda r: r[0])
        out[f"x_{split}"] = torch.from_numpy(np.stack([r[2] for r in rows]))
        out[f"y_{split}"] = torch.tensor([r[1] for r in rows], dtype=torch.long)
    return out
