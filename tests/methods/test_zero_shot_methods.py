"""Zero-shot (emmn, gkt) and mnemonic-code methods: forgetting a digits class without any training data, CPU.

Thresholds are the brief's: forget-train accuracy ≤ 10 % and retain-test accuracy within 10 points of the
original; defaults are tuned in the configs, never here.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from pydantic import ValidationError

from unlearning.config import RequestConfig, TrainConfig
from unlearning.methods import unlearn
from unlearning.methods.emmn import EMMNConfig
from unlearning.methods.gkt import Generator, GKTConfig, attention, attention_loss
from unlearning.methods.mnemonic import MnemonicConfig
from unlearning.metrics import accuracy
from unlearning.mnemonic_codes import code_mixing_loss, make_codes
from unlearning.models import create_model
from unlearning.requests import Split, resolve
from unlearning.training import fit, predict


def _acc(model, samples) -> float:
    return accuracy(predict(model, samples), samples.y)


class _NoDataSplit(Split):
    """A split whose every sample accessor raises; its dataset tensors are NaN / invalid labels too."""

    def _train(self, idx, device):
        raise AssertionError("a zero-shot method read training samples")

    def _test(self, idx, device):
        raise AssertionError("a zero-shot method read test / validation samples")


def _no_data(split: Split) -> Split:
    ds = split.dataset
    poisoned = dataclasses.replace(
        ds, x_train=torch.full(ds.x_train.shape, float("nan")), y_train=torch.full_like(ds.y_train, -1),
        x_test=torch.full(ds.x_test.shape, float("nan")), y_test=torch.full_like(ds.y_test, -1))
    fields = {f.name: getattr(split, f.name) for f in dataclasses.fields(split)}
    return _NoDataSplit(**{**fields, "dataset": poisoned})


def _check_forgets(check, result, original, split) -> None:
    check("forget-train acc", _acc(result.model, split.forget()), "<=", 0.10)
    drop = _acc(original, split.retain_test()) - _acc(result.model, split.retain_test())
    check("retain-test acc drop", drop, "<=", 0.10)


# ----------------------------------------------------------------------------- zero-shot

@pytest.mark.behaviour
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_emmn_forgets_without_any_data(arch, request, class_split, check):
    """Within 2 points of the oracle's forget accuracy (0 on a class request). Measured forget 0 % on both
    architectures, inits 0-2, seeds 0-2, under ATEN_CPU_CAPABILITY avx2 and default; the all-layer update
    it replaced left the mlp at 74-96 % and the cnn at 0-77 % depending on seed and CPU."""
    original = request.getfixturevalue(f"{arch}_original")
    result = unlearn("emmn", original, _no_data(class_split), seed=0)
    assert result.touched == []
    check("forget-train acc (oracle: 0)", _acc(result.model, class_split.forget()), "<=", 0.02)
    _check_forgets(check, result, original, class_split)


def test_emmn_trains_only_the_head_by_default(class_split, mlp_original):
    fast = {"noise_steps": 2, "repair_epochs": 1}
    out = unlearn("emmn", mlp_original, class_split, fast, seed=0).model
    for (name, before), after in zip(mlp_original.named_parameters(), out.parameters(), strict=True):
        assert torch.equal(before, after) != name.startswith("head."), name
        assert after.requires_grad, name  # the frozen layers are handed back trainable
    everything = unlearn("emmn", mlp_original, class_split, {**fast, "update": "all"}, seed=0).model
    assert not torch.equal(mlp_original.fc1.weight, everything.fc1.weight)


@pytest.mark.behaviour
def test_gkt_forgets_without_any_data(class_split, mlp_original, check):
    logs: list[dict] = []
    result = unlearn("gkt", mlp_original, _no_data(class_split), seed=0, log=logs.append)
    assert result.touched == []
    assert type(result.model) is type(mlp_original)
    assert [r["cycle"] for r in logs] == list(range(5, GKTConfig().cycles + 1, 5))
    _check_forgets(check, result, mlp_original, class_split)


def test_gkt_generator_matches_any_input_shape():
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32), (10,)]:
        gen = Generator(shape, z_dim=16, width=8)
        assert tuple(gen(torch.randn(4, 16)).shape) == (4, *shape)


def test_attention_transfer_distance():
    conv = [torch.randn(4, 8, 5, 5), torch.randn(4, 3)]
    assert float(attention_loss(conv, conv)) == 0.0
    assert float(attention_loss(conv, [torch.randn(4, 8, 5, 5), torch.randn(4, 3)])) > 0.0
    assert not torch.allclose(attention(torch.randn(4, 6)), torch.ones(4, 1))  # FC maps are not constant


def test_zero_shot_methods_refuse_non_class_requests(random_split, mlp_original):
    for name in ["emmn", "gkt", "mnemonic"]:
        with pytest.raises(ValueError, match="does not support 'random'"):
            unlearn(name, mlp_original, random_split)


# ----------------------------------------------------------------------------- mnemonic

def test_make_codes_shape_range_and_seed():
    codes = make_codes(10, (1, 8, 8), seed=3)
    assert codes.shape == (10, 1, 8, 8) and float(codes.min()) >= 0.0 and float(codes.max()) <= 1.0
    assert torch.equal(codes, make_codes(10, (1, 8, 8), seed=3))
    assert not torch.equal(codes, make_codes(10, (1, 8, 8), seed=4))


def test_code_mixing_loss_replaces_with_probability_t_mix():
    codes = make_codes(3, (4,), seed=0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    seen: list[torch.Tensor] = []

    def model(inp):
        seen.append(inp.clone())
        return torch.zeros(len(inp), 3)

    code_mixing_loss(codes, 1.0, torch.Generator().manual_seed(0))(model, x, y)
    assert torch.equal(seen[-1], codes[y])
    loss = code_mixing_loss(codes, 0.0, torch.Generator().manual_seed(0))(model, x, y)
    assert torch.equal(seen[-1], x) and math.isclose(float(loss), math.log(3), rel_tol=1e-6)
    with pytest.raises(ValueError, match="t_mix"):
        code_mixing_loss(codes, 1.5, torch.Generator())


@pytest.mark.behaviour
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_mnemonic_forgets_from_codes_only(arch, coded, class_split, check):
    """One rule for both architectures: λ is chosen on the codes (measured forget 0 %, retain-test within
    0.4 (mlp) / 1.5 (cnn) points); the official λ1/λ2 rule left 86-99 % of the class on these two."""
    model = coded(arch)
    result = unlearn("mnemonic", model, _no_data(class_split), seed=0)
    assert result.touched == ["mnemonic"]
    _check_forgets(check, result, model, class_split)


@pytest.mark.behaviour
@pytest.mark.parametrize("name, arch, forget", [("mnemonic", "cnn", 8), ("emmn", "mlp", 4)])
def test_zero_shot_methods_forget_from_a_model_that_never_held_another_class(name, arch, forget, digits, check):
    """A class the training set lacks (a calibration universe without the live class, a class a done request
    removed; `Split.absent_classes`) is no kept class: its code or noise says nothing about what the model
    keeps. Counted as kept, mnemonic's keep test failed at the first λ (this cnn kept 50 % of class 8) and
    EMMN's noise for it cost this mlp 17.7 points of retain-test accuracy (1.9 without it)."""
    keep = digits.y_train != 3
    without_3 = dataclasses.replace(digits, x_train=digits.x_train[keep], y_train=digits.y_train[keep])
    split = resolve(RequestConfig(classes=[forget]), without_3)
    assert split.absent_classes == [3] and resolve(RequestConfig(classes=[forget]), digits).absent_classes == []
    codes = make_codes(digits.num_classes, digits.in_shape, seed=0)
    loss = code_mixing_loss(codes, 0.1, torch.Generator().manual_seed(0)) if name == "mnemonic" else None
    torch.manual_seed(0)
    model = fit(create_model(arch, digits.num_classes, digits.in_shape), split.train(), TrainConfig(epochs=15),
                **({"loss_fn": loss} if loss else {}))
    if name == "mnemonic":
        model.extra = {"mnemonic_codes": codes}
    _check_forgets(check, unlearn(name, model, _no_data(split), seed=0), model, split)


class _LineProbe:
    """A stand-in for ImpressionProbe on a 1-weight model whose weight is the signed λ of the walk."""

    def __init__(self, score, kept=lambda w: 1.0):
        self._score, self._kept = score, kept
        self.start = score(0.0)  # θ_o's score, as ImpressionProbe.start

    def score(self, model):
        w = float(model.weight.detach())
        return self._score(w), self._kept(w)


def _walk(probe, sign=-1.0, keep_prob=0.99):
    from unlearning.methods.mnemonic_step import lambda_grid, walk

    model = torch.nn.Linear(1, 1, bias=False)
    base, steps = {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}
    return walk(model, base, steps, probe, lambda_grid(0.1, 16.0, 8), sign, keep_prob, patience=8)


def test_mnemonic_walk_stops_at_the_target_the_keep_floor_or_a_stall():
    """The three ways a λ walk ends (MnemonicConfig): the first λ at the target; the most forgotten λ
    before the kept impressions break; the bottom of a score that turns back (the digits mlp's pattern),
    where a flat, saturated start is not taken for a stall."""
    lam, score = _walk(_LineProbe(lambda w: 2.0 + w))  # θ−: w = −λ, the score falls 1 per unit of λ
    assert 2.0 <= lam < 2.0 * 2 ** (1 / 8) and score <= 0.0
    lam, score = _walk(_LineProbe(lambda w: 2.0 + w, kept=lambda w: 1.0 if -w < 1.0 else 0.5))
    assert lam < 1.0 <= lam * 2 ** (1 / 8) and score > 0.0
    flat_then_v = _LineProbe(lambda w: 5.0 if -w < 1.0 else 5.0 - 4.0 * min(-w - 1.0, 1.0) + max(-w - 2.0, 0.0))
    lam, score = _walk(flat_then_v)
    assert 2.0 <= lam < 2.0 * 2 ** (1 / 8) and math.isclose(score, 1.0, abs_tol=0.2)


def test_mnemonic_choose_step_prefers_theta_minus_and_stops_at_the_first_quantile_that_forgets():
    from unlearning.methods.mnemonic_step import choose_step, lambda_grid

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    steps = [{"weight": torch.ones(1, 1) * k} for k in (1.0, 2.0, 4.0)]  # τ99 / τ98 / τ95: 1, 2, 4 per λ
    probe = _LineProbe(lambda w: 3.0 - abs(w))  # symmetric in the sign: ties go to θ−
    events = []
    score = choose_step(model, probe, steps, (0.99, 0.98, 0.95), lambda_grid(0.1, 2.0, 8), 0.99, 8,
                        events.append)
    # τ99 moves |w| to 2 at most (score 1: short); τ98 reaches 3 at the first λ ≥ 1.5, on θ−
    assert score <= 0.0 and events[-1]["reached"] and (events[-1]["quantile"], events[-1]["sign"]) == (0.98, -1.0)
    assert 1.5 <= events[-1]["lambda"] < 1.5 * 2 ** (1 / 8)
    assert math.isclose(float(model.weight.detach()), -2.0 * events[-1]["lambda"], rel_tol=1e-6)


def test_mnemonic_official_rule_is_kept(class_split, coded):
    """scale='official' is the published θ ± min(λ1, λ2/max r)·r: at λ1 1e-3 it barely moves this mlp."""
    out = unlearn("mnemonic", coded("mlp"), class_split, MnemonicConfig(scale="official"), seed=0).model
    moved = max(float((a - b).detach().abs().max())
                for a, b in zip(coded("mlp").parameters(), out.parameters(), strict=True))
    assert 0.0 < moved <= 10.0  # the largest step of any tensor is at most λ2
    assert _acc(out, class_split.forget()) > 0.5


def test_mnemonic_refuses_a_model_trained_without_codes(class_split, cnn_original):
    with pytest.raises(ValueError, match="not trained with mnemonic codes"):
        unlearn("mnemonic", cnn_original, class_split)


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("cls, bad", [
    (EMMNConfig, {"noise_lr": 0}), (EMMNConfig, {"noise_per_class": 0}), (EMMNConfig, {"min_noise_l2": -1}),
    (EMMNConfig, {"update": "body"}),
    (GKTConfig, {"cycles": 0}), (GKTConfig, {"threshold": 1.5}), (GKTConfig, {"beta_at": -1}),
    (MnemonicConfig, {"lambda1": 0}), (MnemonicConfig, {"lambda2": -1}), (MnemonicConfig, {"keep_prob": 1.5}),
    (MnemonicConfig, {"lambda_min": 20.0}), (MnemonicConfig, {"ratio_quantiles": [1.0]}),
])
def test_configs_reject_bad_values(cls, bad):
    with pytest.raises(ValidationError):
        cls.model_validate(bad)
