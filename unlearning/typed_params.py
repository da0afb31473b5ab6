"""`params.yaml` with every method's own typed section: what commands that run methods validate.

`unlearn` holds one typed field per registered method (its own config class), so a bad method key or
value fails here, naming the key, before anything trains. `retrain` inherits the training recipe here,
in one place. Imported through `unlearning.params` (`Params`), which stays importable without torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, create_model, field_validator, model_validator

from .config import CoreParams, MethodSections
from .methods import METHODS, MethodConfig


class _UnlearnBase(MethodSections):
    """`methods` to run, plus one section per method (its defaults unless params.yaml sets some)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):  # `salun:` with nothing under it means the defaults
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


class Params(CoreParams):
    """The whole of `params.yaml`: `CoreParams` with every method's section typed by its own config."""

    unlearn: UnlearnConfig = Field(default_factory=UnlearnConfig)  # type: ignore[valid-type]

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
