"""Dataset registry: loaders that turn each dataset into a `Dataset` of tensors, read from a local root.

Offline and embedded: `digits` and `diabetes` (scikit-learn). Torchvision layouts: `mnist`,
`fashion_mnist`, `cifar10`, `cifar100` (fine or coarse labels), `svhn`; `cifar10_jpeg` reads a JPEG
archive. Nothing is downloaded unless `download` is true.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .registry import Registry

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
register_dataset = DATASETS.register

DEFAULT_ROOT_ENV = "UNLEARNING_DATA_ROOT"


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

# The raw value range of a set whose images are rescaled to uint8 when loaded (scikit-learn's digits run
# 0..16); every other image set is stored as read (0..255). A served model maps raw inputs the same way.
RAW_MAX = {"digits": 16.0}


@register_dataset("digits")
def digits(root: object = None, download: bool = False, task: str = "classification") -> Dataset:
    """scikit-learn digits: 1,797 8x8 grey images, 10 classes; a fixed stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / RAW_MAX["digits"])), 0, 255).astype(np.uint8)[:, None]  # [N,1,8,8]
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
    # NCHW like every other loader: the decoded HWC images stack with channels_last strides (kept by the cache),
    # and on the CPU a channels_last batch crashed ResNet-18's backward below 8 channels (torch 2.14, SSD, width 4).
    x_tr, x_te = blob["x_train"].contiguous(), blob["x_test"].contiguous()
    mean, std = _channel_stats(x_tr)
    return _finish("cifar10_jpeg", task, x_tr, blob["y_train"], x_te, blob["y_test"], CIFAR10_CLASSES, mean, std, True)


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
