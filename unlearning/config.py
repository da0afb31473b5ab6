"""Typed, validated configuration: one pydantic model per `params.yaml` section.

A bad value fails at load time with the key, what is allowed and what was given. Method
sub-sections of `unlearn` are validated against each method's own config class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(Section):
    name: str = "digits"
    root: str | None = None
    download: bool = False
    task: Literal["classification", "regression"] | None = None  # None: the dataset's natural task
    labels: Literal["fine", "coarse"] | None = None  # cifar100 only: coarse = the 20 superclasses

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"must be one of {DATASETS.names()}; got {v!r}")
        return v

    def options(self) -> dict[str, Any]:
        """Keyword options for the dataset loader (only those that were set)."""
        out: dict[str, Any] = {}
        if self.task is not None:
            out["task"] = self.task
        if self.labels is not None:
            out["labels"] = self.labels
        return out


class RandomSpec(Section):
    fraction: float

    @field_validator("fraction")
    @classmethod
    def _in_open_unit(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1); got {v}")
        return v


REQUEST_KINDS = ("classes", "subclass", "random", "ids", "ids_file", "target_range")


class RequestConfig(Section):
    """What to forget: exactly one of classes, subclass, random, ids, ids_file, target_range."""

    classes: list[int | str] | None = None
    subclass: int | str | None = None
    random: RandomSpec | None = None
    ids: list[int] | None = None
    ids_file: str | None = None
    target_range: tuple[float, float] | None = None
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @field_validator("random", mode="before")
    @classmethod
    def _bare_fraction(cls, v: Any) -> Any:
        return {"fraction": v} if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _exactly_one(self) -> RequestConfig:
        kinds = [k for k in REQUEST_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("request needs exactly one of classes, subclass, random, ids, ids_file, "
                             f"target_range; got {kinds or 'none'}")
        if self.target_range is not None and self.target_range[0] > self.target_range[1]:
            raise ValueError(f"target_range must be [lo, hi] with lo <= hi; got {list(self.target_range)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in REQUEST_KINDS if getattr(self, k) is not None)


class ModelConfig(Section):
    name: str = "mlp"
    width: int | None = Field(None, gt=0)  # optional width override (hidden units / base channels)
    head: Literal["flat", "gap"] | None = None  # cnn only: flattened map (default) or global average pool

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .models import MODELS

        if v not in MODELS:
            raise ValueError(f"must be one of {MODELS.names()}; got {v!r}")
        return v

    @model_validator(mode="after")
    def _head_for_cnn(self) -> ModelConfig:
        if self.head is not None and self.name != "cnn":
            raise ValueError(f"'head' applies to the cnn only; model is {self.name!r}")
        return self


class MnemonicConfig(Section):
    """Train with class mnemonic codes mixed in (needed by the `mnemonic` method)."""

    t_mix: float = Field(0.1, gt=0.0, lt=1.0)


class TrainConfig(Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    scheduler: Literal["none", "cosine", "linear", "onecycle"] = "none"
    grad_clip: float | None = Field(None, gt=0.0)
    augment: bool | None = None  # None: on for datasets where crop + flip makes sense
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    mnemonic: MnemonicConfig | None = None


class UnlearnConfig(BaseModel):
    """`methods` to run, plus one optional sub-section per method with that method's own config."""

    model_config = ConfigDict(frozen=True, extra="allow")

    methods: list[str] = Field(default_factory=lambda: ["finetune", "neggrad", "neggrad_plus", "random_label"])

    @model_validator(mode="after")
    def _check_methods(self) -> UnlearnConfig:
        from .methods import METHODS

        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"unlearn.methods: unknown method {name!r}; available: {METHODS.names()}")
        for key, value in (self.model_extra or {}).items():
            if key not in METHODS:
                raise ValueError(f"unlearn.{key}: unknown method section; available: {METHODS.names()}")
            try:
                METHODS.get(key).config.model_validate(value or {})
            except ValidationError as err:
                raise ValueError(f"unlearn.{key}: {_first_error(err)}") from None
        return self

    def method_config(self, name: str) -> Any:
        """The typed config of method `name` (its defaults overlaid with the params section)."""
        from .methods import METHODS

        return METHODS.get(name).config.model_validate((self.model_extra or {}).get(name) or {})


class EvaluateConfig(Section):
    oracle: bool = True
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    mia_classifier: Literal["lr", "svc"] = "lr"  # entropy MIA of Bad Teaching: LR (paper) or SVC (repo)
    ain: bool = True
    ain_max_steps: int = Field(500, ge=1)
    device: str = "auto"


class PromoteConfig(Section):
    gates: dict[str, float] = Field(default_factory=lambda: {
        "forget_acc_vs_oracle": 2.0, "retain_acc_drop": 2.0, "test_acc_drop": 2.0, "mia_vs_oracle": 5.0,
    })


class TrackingConfig(Section):
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "unlearning"


class Params(Section):
    """The whole of `params.yaml`."""

    # default_factory: sections validate lazily (UnlearnConfig checks names against the method registry).
    data: DataConfig = Field(default_factory=DataConfig)
    request: RequestConfig = Field(default_factory=lambda: RequestConfig(classes=[3]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


class ConfigError(ValueError):
    """A params file or override that does not validate; the message names the key."""


def _first_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        parts.append(f"{loc}: {msg}" + ("" if isinstance(given, dict) else f" (given: {given!r})"))
    return "; ".join(parts)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (`[a, b]`, `0.1`, `true`)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like section.key=value; got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = yaml.safe_load(value)
        if parts[0] == "request" and len(parts) == 2 and parts[1] in REQUEST_KINDS:
            # A request names one kind: setting one replaces the others (keeps seed/val_fraction).
            for other in set(REQUEST_KINDS) - {parts[1]}:
                out["request"].pop(other, None)
    return out


def parse_params(raw: dict[str, Any], overrides: list[str] | None = None) -> Params:
    """Validate a params mapping (after overrides) into `Params`, raising `ConfigError` with the key."""
    data = apply_overrides(raw, overrides or [])
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid params: {_first_error(err)}") from None


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load `params.yaml` (or defaults when `path` is None) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"params file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, overrides)
