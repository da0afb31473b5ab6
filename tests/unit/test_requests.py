"""Forget requests: disjoint, deterministic, stable hash, and a clear error for each bad request."""

from __future__ import annotations

import pytest
import torch

from unlearning.config import RequestConfig
from unlearning.requests import resolve


def _sets(split):
    return set(split.forget_idx.tolist()), set(split.retain_idx.tolist())


@pytest.mark.parametrize("request_kwargs", [{"classes": [3]}, {"classes": [3, 5]}, {"random": 0.1},
                                            {"ids": [0, 5, 17, 200]}])
def test_split_is_disjoint_and_covers_train(digits, request_kwargs) -> None:
    split = resolve(RequestConfig(**request_kwargs), digits)
    forget, retain = _sets(split)
    assert forget and retain
    assert not forget & retain
    assert forget | retain == set(range(len(digits.y_train)))
    assert not set(split.val_idx.tolist()) & set(split.test_idx.tolist())
    assert len(split.val_idx) + len(split.test_idx) == len(digits.y_test)


def test_class_request_selects_exactly_that_class(digits) -> None:
    split = resolve(RequestConfig(classes=[3, "5"]), digits)
    assert set(digits.y_train[split.forget_idx].tolist()) == {3, 5}
    assert not torch.isin(digits.y_train[split.retain_idx], torch.tensor([3, 5])).any()
    assert set(split.forget_test(None or "cpu").y.tolist()) == {3, 5}
    assert not torch.isin(split.retain_test("cpu").y, torch.tensor([3, 5])).any()


def test_resolution_is_deterministic_and_hash_stable(digits) -> None:
    a = resolve(RequestConfig(random=0.1, seed=4), digits)
    b = resolve(RequestConfig(random={"fraction": 0.1}, seed=4), digits)
    c = resolve(RequestConfig(random=0.1, seed=5), digits)
    assert torch.equal(a.forget_idx, b.forget_idx) and a.hash == b.hash
    assert a.hash != c.hash
    assert len(a.forget_idx) == round(0.1 * len(digits.y_train))
    ids = resolve(RequestConfig(ids=a.forget_idx.tolist()[::-1]), digits)
    assert ids.hash == a.hash  # the hash identifies what is forgotten, however it was asked for


def test_ids_file(tmp_path, digits) -> None:
    f = tmp_path / "ids.txt"
    f.write_text("# deletion request 42\n3, 9\n27\n")
    split = resolve(RequestConfig(ids_file=str(f)), digits)
    assert split.forget_idx.tolist() == [3, 9, 27]
    f.write_text("3\nseven\n")
    with pytest.raises(ValueError, match="ids.txt:2: not an integer sample id") as err:
        resolve(RequestConfig(ids_file=str(f)), digits)
    assert "seven" not in str(err.value)  # the line's content is never echoed


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": [12]}, r"unknown class 12: must be in \[0, 9\]"),
    ({"classes": ["dog"]}, "unknown class 'dog'"),
    ({"classes": list(range(10))}, "forgets every training sample"),
    ({"ids": [1, 2, 99999]}, r"out of range \[0, 1436\]: \[99999\]"),
    ({"ids": [1, 2, 2]}, r"duplicated sample ids: \[2\]"),
    ({"ids": []}, "empty forget set"),
    ({"random": 0.0001}, "empty forget set"),
    ({"ids_file": "/nonexistent/ids.txt"}, "ids_file not found"),
    ({"subclass": "rocket"}, "subclass requests need coarse labels"),
    ({"target_range": [0, 1]}, "target_range requests need a regression dataset"),
])
def test_bad_requests_fail_clearly(digits, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(RequestConfig(**kwargs), digits)


@pytest.mark.parametrize("kwargs, message", [
    ({"random": 1.5}, r"must be in \(0, 1\)"),
    ({"random": 0.0}, r"must be in \(0, 1\)"),
    ({"classes": [1], "random": 0.1}, "exactly one of"),
    ({}, "exactly one of"),
])
def test_bad_request_configs_fail_at_load(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RequestConfig(**kwargs)


def test_target_range_on_regression(diabetes) -> None:
    hi = float(diabetes.y_train.max())
    lo = float(torch.quantile(diabetes.y_train, 0.8))
    split = resolve(RequestConfig(target_range=[lo, hi]), diabetes)
    assert (diabetes.y_train[split.forget_idx] >= lo).all()
    assert (diabetes.y_train[split.retain_idx] < lo).all()
    assert split.scenario == "range" and split.forget_test("cpu") is not None


def test_absent_classes_are_those_the_training_set_lacks(digits) -> None:
    """Classes with no sample in forget + retain (a calibration universe, a class removed by a done request):
    methods that stand in for kept classes (mnemonic, EMMN) or relabel (random_label, SalUn) leave them out."""
    import dataclasses

    from unlearning.requests import split_from_ids

    assert resolve(RequestConfig(classes=[3]), digits).absent_classes == []
    keep = digits.y_train != 3
    universe = dataclasses.replace(digits, x_train=digits.x_train[keep], y_train=digits.y_train[keep])
    assert resolve(RequestConfig(random=0.1), universe).absent_classes == [3]
    removed = torch.nonzero(digits.y_train == 5).flatten().tolist()
    later = split_from_ids(digits, scenario="ids", forget_ids=[0], removed_ids=removed, val_ids=[0],
                           forget_test_ids=None, forget_classes=None, description="one id")
    assert later.absent_classes == [5]


def test_relabelling_methods_never_draw_an_absent_class(digits, monkeypatch) -> None:
    import dataclasses

    import unlearning.methods.random_label as rl
    from unlearning.methods import unlearn
    from unlearning.methods.random_label import RandomLabelConfig
    from unlearning.models import create_model

    drawn = []

    def spy(y, num_classes, generator, exclude=None):
        drawn.append(sorted(exclude or []))
        return torch.zeros_like(y)

    monkeypatch.setattr(rl, "random_other_labels", spy)
    keep = digits.y_train != 3
    universe = dataclasses.replace(digits, x_train=digits.x_train[keep], y_train=digits.y_train[keep])
    model = create_model("mlp", digits.num_classes, digits.in_shape)
    unlearn("random_label", model, resolve(RequestConfig(classes=[8]), universe), RandomLabelConfig(epochs=1))
    unlearn("random_label", model, resolve(RequestConfig(random=0.05), universe), RandomLabelConfig(epochs=1))
    assert drawn == [[3, 8], [3]]
