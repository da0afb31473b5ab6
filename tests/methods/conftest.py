"""Digits originals shared by the method tests (trained once per session; methods copy, never mutate)."""

from __future__ import annotations

import pytest
import torch

from unlearning.config import RequestConfig, TrainConfig
from unlearning.mnemonic_codes import code_mixing_loss, make_codes
from unlearning.models import create_model
from unlearning.requests import resolve
from unlearning.training import fit


@pytest.fixture(scope="session")
def class_split(digits):
    return resolve(RequestConfig(classes=[3]), digits)


@pytest.fixture(scope="session")
def random_split(digits):
    return resolve(RequestConfig(random=0.1), digits)


def _train_original(name: str, split, loss_fn=None, **model_kwargs):
    """A digits model trained on all of D (the same D for the class and the random request)."""
    ds = split.dataset
    torch.manual_seed(0)
    model = create_model(name, ds.num_classes, ds.in_shape, **model_kwargs)
    kw = {} if loss_fn is None else {"loss_fn": loss_fn}
    return fit(model, split.train(), TrainConfig(epochs=15), **kw)


@pytest.fixture(scope="session")
def cnn_original(class_split):
    return _train_original("cnn", class_split)


@pytest.fixture(scope="session")
def mlp_original(class_split):
    return _train_original("mlp", class_split)


@pytest.fixture(scope="session")
def coded(class_split):
    """`coded(name)`: a digits model trained with mnemonic codes mixed in (t_mix 0.1), for the `mnemonic`
    method; one per architecture per session (the flat-head cnn: see MnemonicConfig)."""
    ds, cache = class_split.dataset, {}

    def get(name: str):
        if name not in cache:
            codes = make_codes(ds.num_classes, ds.in_shape, seed=0)
            loss_fn = code_mixing_loss(codes, 0.1, torch.Generator().manual_seed(0))
            cache[name] = _train_original(name, class_split, loss_fn)
            cache[name].extra = {"mnemonic_codes": codes}
        return cache[name]

    return get
