"""Shared fixtures: tiny real data (scikit-learn digits / diabetes), trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Tiny models gain nothing from intra-op threads; on a busy 2-core box extra threads made suites ~10x slower.
torch.set_num_threads(1)

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests skip themselves without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The local copy of public datasets beside the checkout; tests using it skip where it is absent."""
    if not SHARED_DATASETS.exists():
        pytest.skip(f"no local dataset copy at {SHARED_DATASETS} (only on the project's dev machines)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def digits():
    from unlearning.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def diabetes():
    from unlearning.datasets import load_dataset

    return load_dataset("diabetes")
