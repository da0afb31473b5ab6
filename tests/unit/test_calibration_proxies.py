"""Calibration without a search: universes, proxy requests, search spaces, profiles and settings' sources."""

from __future__ import annotations

import json

import pytest
import torch

from unlearning.calibration.apply import apply_values, use_profile
from unlearning.calibration.profile import (
    SCHEMA,
    data_version,
    method_fingerprint,
    new_profile,
    profile_key,
    profile_path,
    read_profile,
    write_profile,
)
from unlearning.calibration.proxies import draw_proxies, proxy_split
from unlearning.calibration.universe import build_universe, request_kind
from unlearning.config import RequestConfig
from unlearning.methods import METHODS
from unlearning.methods.base import MethodConfig, register_method
from unlearning.methods.space import IntRange, LogUniform, Uniform
from unlearning.params import load_params
from unlearning.requests import resolve


def _ids(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


@pytest.mark.parametrize("request_kind_", [{"classes": [3]}, {"classes": [3, 7]}, {"random": 0.1},
                                           {"ids": list(range(0, 600, 7))}])
def test_proxies_are_disjoint_from_live_and_excluded_requests_and_of_the_same_kind(digits, request_kind_):
    live = resolve(RequestConfig(**request_kind_), digits)
    excluded = [torch.nonzero(digits.y_train == 5).flatten().tolist(), list(range(1, 400, 11))]
    universe = build_universe(live, excluded)
    avoid = _ids(live.forget_idx) | set(excluded[0]) | set(excluded[1])
    assert not _ids(universe.ids) & avoid
    proxies = draw_proxies(universe, 3, seed=0)
    seen: set[int] = set()
    for p in proxies:
        ids = set(p.ids)
        assert ids and not ids & avoid and not ids & seen  # disjoint from live, excluded and each other
        seen |= ids
        assert p.scenario == live.scenario
        split = proxy_split(universe, p)
        assert _ids(universe.ids[split.forget_idx]) == ids
        assert not _ids(universe.ids[split.retain_idx]) & (avoid | ids)  # proxy models never train on them
        if live.scenario == "class":
            assert len(p.classes) == len(live.forget_classes)
            assert not set(p.classes) & (set(live.forget_classes) | {5})
            assert _ids(torch.nonzero(torch.isin(digits.y_train, torch.tensor(p.classes))).flatten()) - avoid == ids
        elif live.scenario == "random":
            assert len(ids) == round(live.forget_fraction * len(universe.ids))
        else:
            assert len(ids) == len(live.forget_idx)
    again = draw_proxies(build_universe(live, excluded), 3, seed=0)
    assert [p.ids for p in again] == [p.ids for p in proxies]  # seeded, deterministic
    assert [p.ids for p in draw_proxies(universe, 3, seed=1)] != [p.ids for p in proxies]


def test_class_universe_leaves_out_the_forgotten_class_test_examples(digits):
    live = resolve(RequestConfig(classes=[3]), digits)
    universe = build_universe(live)
    assert 3 not in digits.y_test[universe.test_idx].tolist()
    assert 3 not in digits.y_test[universe.val_idx].tolist()
    split = proxy_split(universe, draw_proxies(universe, 1)[0])
    assert split.forget_test() is not None and len(split.retain_test()) > 0


def test_range_proxies_are_target_windows_of_the_same_size(diabetes):
    live = resolve(RequestConfig(target_range=(250, 400)), diabetes)
    universe = build_universe(live)
    proxies = draw_proxies(universe, 3, seed=0)
    for p in proxies:
        lo, hi = p.target_range
        assert len(p.ids) == len(live.forget_idx) and not set(p.ids) & _ids(live.forget_idx)
        y = diabetes.y_train[torch.tensor(p.ids)]
        assert float(y.min()) == lo and float(y.max()) == hi
    assert len({p.key for p in proxies}) == 3


def test_too_many_proxies_is_one_clear_error(digits):
    universe = build_universe(resolve(RequestConfig(classes=[0, 1, 2, 3]), digits))
    with pytest.raises(ValueError, match="lower calibration.proxies"):
        draw_proxies(universe, 3)


def test_request_kind_keys_the_profile(digits):
    kind = request_kind(resolve(RequestConfig(random=0.1), digits))
    assert kind == {"scenario": "random", "fraction": 0.1}
    assert request_kind(resolve(RequestConfig(ids=list(range(150))), digits)) == {"scenario": "ids", "size": 128}
    assert request_kind(resolve(RequestConfig(classes=[3]), digits)) == {"scenario": "class", "classes": 1}


def test_every_method_declares_a_space_or_why_not_and_its_defaults_lie_inside(digits):
    split = resolve(RequestConfig(classes=[3]), digits)
    for name in METHODS.names():
        cfg = METHODS.get(name).config
        if not cfg.search_space:
            assert cfg.no_search and cfg.no_search != MethodConfig.no_search, name
            continue
        assert 1 <= len(cfg.search_space) <= 3, name  # a few key hyperparameters, not everything
        effective = cfg().effective(split)
        for key, dist in cfg.search_space.items():
            assert dist.contains(effective[key]), f"{name}.{key} default {effective[key]} outside {dist.describe()}"


def test_a_space_naming_no_field_or_a_bad_range_is_refused():
    class Cfg(MethodConfig):
        lr: float = 0.1
        search_space = {"learning_rate": LogUniform(1e-3, 1.0)}

    with pytest.raises(ValueError, match="not fields of its config"):
        register_method("bad_space_method", config=Cfg, needs={"retain"})
    with pytest.raises(ValueError, match="low > 0"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="low < high"):
        IntRange(5, 5)
    assert Uniform(0.1, 0.9).contains(0.5) and not Uniform(0.1, 0.9).contains(True)


def test_explicit_params_win_over_the_profile_and_every_setting_has_a_source():
    params = load_params(None, ["unlearn.methods=[finetune,salun]", "unlearn.finetune.lr=0.05"])
    new, sources = apply_values(params, {"finetune": {"lr": 0.001, "epochs": 2}, "salun": {"lr": 0.07}})
    assert new.unlearn.finetune.lr == 0.05 and new.unlearn.finetune.epochs == 2 and new.unlearn.salun.lr == 0.07
    assert sources["finetune"]["lr"] == "params" and sources["finetune"]["epochs"] == "profile"
    assert sources["finetune"]["batch_size"] == "default" and sources["salun"]["lr"] == "profile"
    assert set(sources["salun"]) == set(type(new.unlearn.salun).model_fields)


def test_profiles_are_found_by_key_written_atomically_and_checked(tmp_path, digits):
    params = load_params(None, [f"calibration.profile_dir={tmp_path}", "unlearn.methods=[finetune]"])
    split = resolve(params.request, digits)
    key = profile_key(params, split, data_version(split))
    path = profile_path(tmp_path, key)
    profile = new_profile(key)
    profile["methods"]["finetune"] = {"values": {"epochs": 3}}
    write_profile(path, profile)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert read_profile(path, key)["schema"] == SCHEMA
    use = use_profile(params, split)
    assert use.path == str(path) and use.params.unlearn.finetune.epochs == 3
    assert use.sources["finetune"]["epochs"] == "profile"
    other = resolve(RequestConfig(random=0.1), digits)
    with pytest.raises(ValueError, match="made for another request"):
        read_profile(path, profile_key(params, other, data_version(other)))
    assert use_profile(params, other).path is None  # another kind: another file name, not found
    off = load_params(None, [f"calibration.profile_dir={tmp_path}", "calibration.use_profile=false"])
    assert use_profile(off, split).path is None
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="schema-1"):
        use_profile(params, split)


def test_a_profile_entry_made_for_other_method_defaults_is_left_out(tmp_path, digits):
    """Values searched against defaults or a search space that have since changed are not applied."""
    params = load_params(None, [f"calibration.profile_dir={tmp_path}", "unlearn.methods=[finetune,salun]"])
    split = resolve(params.request, digits)
    key = profile_key(params, split, data_version(split))
    profile = new_profile(key)
    profile["methods"]["finetune"] = {"values": {"epochs": 3}, "fingerprint": method_fingerprint("finetune")}
    profile["methods"]["salun"] = {"values": {"lr": 0.07}, "fingerprint": "made-for-older-salun"}
    write_profile(profile_path(tmp_path, key), profile)
    use = use_profile(params, split)
    assert use.params.unlearn.finetune.epochs == 3 and use.sources["finetune"]["epochs"] == "profile"
    assert use.params.unlearn.salun.lr == type(use.params.unlearn.salun)().lr
    assert use.sources["salun"]["lr"] == "default"
    assert any(n.startswith("salun: profile") and "unlearn calibrate --methods salun" in n for n in use.notes)
    assert method_fingerprint("finetune") != method_fingerprint("salun")
