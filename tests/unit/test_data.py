"""Datasets: embedded ones load offline; torchvision-layout ones read a local root or fail naming the path."""

from __future__ import annotations

import pytest
import torch

from unlearning.data import crop_flip
from unlearning.datasets import DATASETS, load_dataset


def test_digits_shapes_and_ids(digits) -> None:
    assert digits.x_train.dtype == torch.uint8 and digits.in_shape == (1, 8, 8)
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert digits.num_classes == 10
    train = digits.train()
    assert torch.equal(train.ids, torch.arange(len(train)))
    x = train.inputs()
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.1  # normalised


def test_batches_cover_every_sample_once(digits) -> None:
    train = digits.train()
    seen = torch.cat([y for _, y in train.batches(100, generator=torch.Generator().manual_seed(0))])
    assert len(seen) == len(train)
    assert torch.equal(torch.sort(seen).values, torch.sort(train.y).values)


def test_diabetes_is_regression(diabetes) -> None:
    assert diabetes.task == "regression" and diabetes.num_classes == 1
    assert diabetes.y_train.dtype == torch.float32


def test_crop_flip_keeps_shape_and_content_scale() -> None:
    x = torch.rand(16, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "cifar10_jpeg"])
def test_missing_local_files_name_the_expected_path(tmp_path, name, monkeypatch) -> None:
    monkeypatch.setenv("UNLEARNING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset(name, root=tmp_path / "empty", download=False)


def test_registry_lists_all_datasets() -> None:
    assert {"digits", "diabetes", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn",
            "cifar10_jpeg"} <= set(DATASETS.names())
    with pytest.raises(KeyError, match="unknown dataset 'imagenet'; available"):
        DATASETS.get("imagenet")


def test_mnist_from_local_copy(shared_datasets) -> None:
    ds = load_dataset("mnist", root=shared_datasets)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist()[:3] == [5923, 6742, 5958]
    reg = load_dataset("mnist", root=shared_datasets, task="regression")
    assert reg.task == "regression" and reg.y_train.dtype == torch.float32


@pytest.mark.slow
def test_cifar10_jpeg_from_local_copy(shared_datasets, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("UNLEARNING_CACHE", str(tmp_path))
    ds = load_dataset("cifar10_jpeg", root=shared_datasets)
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.y_train).tolist() == [5000] * 10
