"""The method contract: registration, typed configs, declared data access, and the `unlearn` entry.

A method is `fn(model, inputs, cfg, *, log=None) -> nn.Module`. `model` is the method's own copy of the
original (the caller's model is never touched). `inputs` hands out only the data the method declared
(`forget`, `retain`, `retain_subset`, `val`, `train`, `mnemonic`, or nothing for zero-shot methods);
anything else raises `DataAccessError`, and what was touched is recorded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..data import Samples
from ..registry import Registry
from ..requests import Split
from ..utils import seed_everything, timed
from .space import Dist, check_space

ACCESS_KINDS = frozenset({"forget", "retain", "retain_subset", "val", "train", "mnemonic"})
ALL_SCENARIOS = frozenset({"class", "subclass", "random", "ids", "range"})


class MethodConfig(BaseModel):
    """Base of every method's config: immutable, unknown keys rejected.

    `search_space`: the few key hyperparameters `unlearning.calibration` may tune on proxy requests
    (`unlearning.methods.space`); a config without one says why in `no_search`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    search_space: ClassVar[dict[str, Dist]] = {}
    no_search: ClassVar[str] = "declares no search space"

    def effective(self, split: Split, seed: int = 0) -> dict[str, Any]:
        """Every field as a run on `split` with method seed `seed` uses it: what a tracker should show.

        A config whose `None` means "chosen at run time" says what it chooses in `chosen`, and its method
        runs with those same values.
        """
        return {**self.model_dump(), **self.chosen(split, seed)}

    def chosen(self, split: Split, seed: int) -> dict[str, Any]:
        """The values picked at run time for fields left unset (none by default)."""
        return {}


class DataAccessError(PermissionError):
    """A method asked for data it did not declare."""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable[..., nn.Module]
    config: type[MethodConfig]
    needs: frozenset[str]
    scenarios: frozenset[str]
    tasks: frozenset[str]
    weak_on: dict[str, str] = field(default_factory=dict)  # scenario -> why the method is weak there

    @property
    def summary(self) -> str:
        from ..catalog import summary

        return summary(self.fn.__doc__)


METHODS: Registry[MethodInfo] = Registry("method")


def register_method(name: str, *, config: type[MethodConfig], needs: set[str] | frozenset[str],
                    scenarios: set[str] | frozenset[str] = ALL_SCENARIOS,
                    tasks: set[str] | frozenset[str] = frozenset({"classification"}),
                    weak_on: dict[str, str] | None = None) -> Callable:
    """Register a method next to its definition, with its config class and the data it touches.

    `weak_on`: scenarios where the method is known not to reach the oracle, one line each saying why:
    "by design" when its paper does not aim at what the oracle does; "measured" when a floor run (its best
    setting, picked with the oracle itself) stays more than 2 points of average gap off, naming the
    bench/results file that shows it. Tables and `unlearn methods` label it there, so a weak result reads
    as the method's limit rather than a broken run; its numbers are still reported in full.
    """
    unknown = set(needs) - ACCESS_KINDS
    if unknown:
        raise ValueError(f"method {name!r}: unknown data access {sorted(unknown)}; allowed: {sorted(ACCESS_KINDS)}")
    if set(weak_on or {}) - set(scenarios):
        raise ValueError(f"method {name!r}: weak_on names scenarios it does not run on: {sorted(weak_on or {})}")
    check_space(name, config.search_space, config.model_fields)

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        METHODS.register(name)(MethodInfo(name, fn, config, frozenset(needs), frozenset(scenarios),
                                          frozenset(tasks), dict(weak_on or {})))
        return fn

    return deco


class UnlearnInputs:
    """What a method may see. Metadata is always available; data only as declared."""

    def __init__(self, split: Split, needs: frozenset[str], *, device: torch.device, seed: int,
                 codes: Tensor | None = None) -> None:
        self._split = split
        self._needs = needs
        self._codes = codes
        self.device = device
        self.seed = seed
        self.touched: set[str] = set()
        ds = split.dataset
        self.task = ds.task
        self.scenario = split.scenario
        self.num_classes = ds.num_classes
        self.in_shape = ds.in_shape
        self.forget_classes = split.forget_classes
        self.absent_classes = list(split.absent_classes or [])  # classes the training set lacks (Split)
        # Labels a relabelling must never draw: the forgotten classes of a class request, and absent classes.
        self.excluded_labels = [*(split.forget_classes if split.scenario == "class" else []), *self.absent_classes]
        self.forget_fraction = split.forget_fraction
        self.mean, self.std = ds.mean, ds.std
        self.augmentable = ds.augment

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator derived from the method seed (batch order, subsets, noise)."""
        return torch.Generator().manual_seed(self.seed * 1_000 + offset)

    def _take(self, kind: str) -> None:
        if kind not in self._needs:
            raise DataAccessError(f"this method declared {sorted(self._needs) or ['none']} but asked for {kind!r}")
        self.touched.add(kind)

    @property
    def forget(self) -> Samples:
        self._take("forget")
        return self._split.forget(self.device)

    @property
    def retain(self) -> Samples:
        self._take("retain")
        return self._split.retain(self.device)

    def retain_subset(self, fraction: float | None = None, count: int | None = None,
                      per_class: int | None = None) -> Samples:
        """A seeded random part of D_r: a fraction, a count, or `per_class` samples of each class."""
        self._take("retain_subset" if "retain_subset" in self._needs else "retain")
        retain = self._split.retain(self.device)
        gen = self.generator(17)
        if per_class is not None:
            picks = []
            for c in torch.unique(retain.y).tolist():
                pos = torch.nonzero(retain.y.cpu() == c).flatten()
                picks.append(pos[torch.randperm(len(pos), generator=gen)[:per_class]])
            return retain.subset(torch.sort(torch.cat(picks)).values)
        n = count if count is not None else int(round((fraction or 0.0) * len(retain)))
        if n <= 0:
            raise ValueError(f"retain subset is empty (fraction={fraction}, count={count}); "
                             "it must select at least one sample")
        return retain.random_subset(n, gen)

    @property
    def val(self) -> Samples:
        self._take("val")
        return self._split.val(self.device)

    @property
    def train(self) -> Samples:
        """The full training set D (SSD's importances over D)."""
        self._take("train")
        return self._split.train(self.device)

    @property
    def codes(self) -> Tensor:
        """Mnemonic class codes stored with the model's checkpoint, one per class: [C, *in_shape]."""
        self._take("mnemonic")
        if self._codes is None:
            raise ValueError("this model was not trained with mnemonic codes (set train.mnemonic and retrain it)")
        return self._codes


@dataclass
class UnlearnResult:
    model: nn.Module
    time_s: float
    touched: list[str] = field(default_factory=list)
    method: str = ""


def check_split(split: Split) -> None:
    """Data-dependent checks every method gets at entry."""
    if len(split.forget_idx) == 0:
        raise ValueError("empty forget set: nothing to unlearn")
    if len(split.retain_idx) == 0:
        raise ValueError("empty retain set: the request forgets everything")
    if len(set(split.forget_idx.tolist()) & set(split.retain_idx.tolist())):
        raise ValueError("forget and retain sets overlap")


def unsupported_reason(name: str, split: Split) -> str | None:
    """Why method `name` cannot serve this request (its task, then its scenario), or None when it can.

    Runs over several methods skip such a method with this reason instead of failing the whole run.
    """
    info = METHODS.get(name)
    if split.dataset.task not in info.tasks:
        return f"method {name!r} does not support {split.dataset.task} tasks; it supports {sorted(info.tasks)}"
    if split.scenario not in info.scenarios:
        return f"method {name!r} does not support {split.scenario!r} requests; it supports {sorted(info.scenarios)}"
    return None


def unlearn(name: str, model: nn.Module, split: Split, cfg: MethodConfig | dict[str, Any] | None = None, *,
            seed: int = 0, device: torch.device | str | None = None,
            log: Callable[[dict[str, Any]], None] | None = None) -> UnlearnResult:
    """Run method `name` on a copy of `model`; time it (CUDA-synchronised) and record the data touched."""
    info = METHODS.get(name)
    if cfg is None or isinstance(cfg, dict):
        cfg = info.config.model_validate(cfg or {})
    elif not isinstance(cfg, info.config):
        raise TypeError(f"config of {name} must be {info.config.__name__}; got {type(cfg).__name__}")
    check_split(split)
    reason = unsupported_reason(name, split)
    if reason:
        raise ValueError(reason)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    codes = (getattr(model, "extra", None) or {}).get("mnemonic_codes")
    inputs = UnlearnInputs(split, info.needs, device=device, seed=seed,
                           codes=codes.to(device) if codes is not None else None)
    seed_everything(seed)
    with timed(device) as t:
        work = copy.deepcopy(model).to(device)
        out = info.fn(work, inputs, cfg, log=log)
    out.eval()
    return UnlearnResult(out, t["s"], sorted(inputs.touched), name)


def list_methods() -> list[str]:
    return METHODS.names()
