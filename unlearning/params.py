"""The whole of `params.yaml`, validated once and completely at load.

`unlearn` holds one typed field per registered method (its own config class), so a bad method key or
value fails here, naming the key, before anything trains. `retrain` inherits the training recipe here,
in one place. `--set section.key=value` overrides are parsed as YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .config import (
    REQUEST_KINDS,
    DataConfig,
    EvaluateConfig,
    ModelConfig,
    PromoteConfig,
    RequestConfig,
    TrackingConfig,
    TrainConfig,
)
from .methods import METHODS, MethodConfig

DEFAULT_METHODS = ["finetune", "neggrad", "neggrad_plus", "random_label"]


class ConfigError(ValueError):
    """A params file or override that does not validate; the message names the key."""


class _UnlearnBase(BaseModel):
    """`methods` to run, plus one section per method (its defaults unless params.yaml sets some)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"methods"} - set(METHODS.names()))
            if unknown:
                raise ValueError(f"unknown method section {unknown[0]!r}; available: {METHODS.names()}")
            # `salun:` with nothing under it means the defaults
            data = {k: ({} if v is None and k != "methods" else v) for k, v in data.items()}
        return data

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"unlearn.methods is empty: list at least one method; available: {METHODS.names()}")
        for name in v:
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}; available: {METHODS.names()}")
        if len(set(v)) != len(v):
            raise ValueError(f"lists a method twice; got {v}")
        return v

    def method_config(self, name: str) -> MethodConfig:
        """The typed config of method `name`."""
        METHODS.get(name)  # an unknown name raises, listing the valid ones
        return getattr(self, name)


UnlearnConfig = create_model(
    "UnlearnConfig", __base__=_UnlearnBase,
    **{name: (METHODS.get(name).config, Field(default_factory=METHODS.get(name).config)) for name in METHODS.names()},
)


class Params(BaseModel):
    """The whole of `params.yaml`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    request: RequestConfig = Field(default_factory=lambda: RequestConfig(classes=[3]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)  # type: ignore[valid-type]
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _retrain_inherits_recipe(self) -> Params:
        """`retrain` trains with `train` (the oracle's recipe) unless its own `recipe` is given."""
        retrain = self.unlearn.retrain
        if "recipe" in retrain.model_fields_set:
            return self
        unlearn = self.unlearn.model_copy(update={"retrain": retrain.model_copy(update={"recipe": self.train})})
        return self.model_copy(update={"unlearn": unlearn})

    def methods_dump(self) -> dict[str, Any]:
        """`unlearn` with only the listed methods' sections (what a run actually uses)."""
        return {"methods": list(self.unlearn.methods),
                **{m: self.unlearn.method_config(m).model_dump() for m in self.unlearn.methods}}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the config section at `loc` (walking Params by field annotations)."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def _first_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed: {_allowed_keys(e['loc'][:-1])}"
        given = e.get("input")
        where = "" if msg.startswith(f"{loc} ") else f"{loc}: "  # a message that already names its key
        parts.append(f"{where}{msg}" + ("" if isinstance(given, dict) else f" (given: {given!r})"))
    return "; ".join(parts)


_KEY = re.compile(r"[A-Za-z0-9_]+")


def _yaml(text: str, where: str) -> Any:
    """`yaml.safe_load`, with bad YAML as a one-line `ConfigError` naming where and the line / column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (`[a, b]`, `0.1`, `true`)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like section.key=value; got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(_KEY.fullmatch(p) for p in parts):
            raise ConfigError(f"override key must look like section.key (letters, digits, _); got {key!r}")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _yaml(value, f"--set {key.strip()}")
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


def read_raw(path: str | Path) -> dict[str, Any]:
    """The mapping in a params file, before validation."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"params file not found: {p}")
    raw = _yaml(p.read_text(), str(p)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load `params.yaml` (or defaults when `path` is None) and apply `section.key=value` overrides."""
    return parse_params(read_raw(path) if path is not None else {}, overrides)
