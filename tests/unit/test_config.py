"""Config: params.yaml loads; a bad value fails at load time naming the key, the allowed values and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearning.params import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_params_yaml_loads_with_defaults() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.name == "digits"
    assert params.request.classes == [3]
    assert params.unlearn.methods


@pytest.mark.parametrize("override, message", [
    ("data.name=imagenet", r"data.name: must be one of \[.*'digits'.*\]; got 'imagenet'"),
    ("model.name=vgg", r"model.name: must be one of .*got 'vgg'"),
    ("model.head=gap", r"model: .*'head' applies to the cnn only; model is 'mlp'"),
    ("train.lr=-1", r"train.lr: Input should be greater than 0"),
    ("train.optimizer=rmsprop", r"train.optimizer: Input should be 'sgd', 'adam' or 'adamw' \(given: 'rmsprop'\)"),
    ("train.epochz=3", r"train.epochz: unknown key; allowed: \[.*'epochs'"),
    ("unlearn.methods=[finetune,magic]", r"unknown method 'magic'; available: \["),
    ("unlearn.finetune={lr: -0.1}", r"unlearn.finetune.lr: Input should be greater than 0"),
    ("unlearn.magic={lr: 1}", r"unlearn: unknown method section 'magic'"),
    ("request.random=2", r"request.random.fraction: must be in \(0, 1\); got 2"),
])
def test_bad_values_name_the_key(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(ROOT / "params.yaml", [override])


def test_overrides_parse_yaml_and_replace_request_kind() -> None:
    params = load_params(ROOT / "params.yaml", ["request.random=0.1", "unlearn.methods=[finetune]",
                                                "unlearn.finetune={epochs: 2}"])
    assert params.request.kind == "random" and params.request.classes is None
    assert params.unlearn.methods == ["finetune"]
    assert params.unlearn.method_config("finetune").epochs == 2


def test_malformed_files_and_overrides(tmp_path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "p.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_params({}, ["train.lr"])


@pytest.mark.parametrize("override, names", [
    ("unlearn.salsa={}", ["unlearn", "'salsa'", "available"]),
    ("unlearn.salun.lr=-1", ["unlearn.salun.lr", "greater than 0", "-1"]),
    ("unlearn.salun.lrr=0.1", ["unlearn.salun.lrr", "allowed", "'lr'"]),
    ("promote.gates.mia_vs_orcale=5", ["promote.gates.mia_vs_orcale", "allowed", "'mia_vs_oracle'"]),
    ("unlearn.methods=[finetune,finetune]", ["unlearn.methods", "twice"]),
])
def test_bad_method_key_or_gate_fails_at_load_naming_it(override, names) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [override])
    for name in names:
        assert name in str(err.value)


def test_method_sections_are_typed_and_retrain_inherits_the_recipe() -> None:
    params = load_params(ROOT / "params.yaml", ["train.epochs=3", "unlearn.salun={lr: 0.05}"])
    assert params.unlearn.salun.lr == 0.05
    assert params.unlearn.method_config("retrain").recipe == params.train
    own = load_params(None, ["train.epochs=3", "unlearn.retrain={recipe: {epochs: 7}}"])
    assert own.unlearn.retrain.recipe.epochs == 7
    off = load_params(None, ["promote.gates.mia_vs_oracle=null"])
    assert "mia_vs_oracle" not in off.promote.gates.limits() and "retain_acc_drop" in off.promote.gates.limits()
