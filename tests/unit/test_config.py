"""Config: params.yaml loads; a bad value fails at load time naming the key, the allowed values and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearning.config import ConfigError, load_params, parse_params

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
    ("train.epochz=3", r"train.epochz: Extra inputs are not permitted"),
    ("unlearn.methods=[finetune,magic]", r"unknown method 'magic'; available: \["),
    ("unlearn.finetune={lr: -0.1}", r"unlearn.finetune: lr: Input should be greater than 0"),
    ("unlearn.magic={lr: 1}", r"unlearn.magic: unknown method section"),
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
