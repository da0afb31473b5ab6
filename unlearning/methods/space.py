"""Search spaces: a method's few key hyperparameters as plain ranges, declared on its config class.

`SalunConfig.search_space = {"lr": LogUniform(1e-3, 0.2), ...}` says what `unlearning.calibration` may tune
on proxy requests; nothing here imports optuna (the search maps each range to it). A config without a
space sets `no_search` to the reason it is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly in [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"{type(self).__name__} needs low < high; got [{self.low}, {self.high}]")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"uniform[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A positive float drawn uniformly in log space (learning rates, weights spanning decades)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise ValueError(f"LogUniform needs low > 0; got {self.low}")

    def describe(self) -> str:
        return f"log-uniform[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] (epochs, steps); `log` spaces it logarithmically."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"IntRange needs low < high; got [{self.low}, {self.high}]")
        if self.log and self.low < 1:
            raise ValueError(f"IntRange(log=True) needs low >= 1; got {self.low}")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"int{'-log' if self.log else ''}[{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of a few listed values."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise ValueError(f"Choice needs at least two options; got {list(self.options)}")

    def contains(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.options))


Dist = Uniform | IntRange | Choice


def check_space(method: str, space: Mapping[str, Dist], fields: Mapping[str, Any]) -> None:
    """Every key a field of the method's config, every value a range: checked when the method registers."""
    unknown = sorted(set(space) - set(fields))
    if unknown:
        raise ValueError(f"search space of {method!r} names {unknown}, which are not fields of its config; "
                         f"fields: {sorted(fields)}")
    for key, dist in space.items():
        if not isinstance(dist, Uniform | IntRange | Choice):
            raise ValueError(f"search space of {method!r}: {key!r} must be Uniform, LogUniform, IntRange or "
                             f"Choice; got {type(dist).__name__}")


def describe_space(space: Mapping[str, Dist]) -> dict[str, str]:
    """The space as text, for profiles and tables."""
    return {k: d.describe() for k, d in space.items()}

