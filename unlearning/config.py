"""Typed, validated configuration: one pydantic model per `params.yaml` section.

A bad value fails at load time with the key, what is allowed and what was given. `unlearn` and the whole
params live in `params.py`: they need the method registry, which imports these (an import cycle here).
"""

from __future__ import annotations

import re
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .pipeline_config import OrchestrationConfig, TrackingConfig

DEFAULT_METHODS = ["finetune", "neggrad", "neggrad_plus", "random_label"]  # `unlearn.methods` unset


def _registered(kind: str, name: str) -> str:
    """`name` if a `kind` (dataset, model) of that name is registered, else a ValueError listing them.

    The registry itself once its module is loaded (it may hold names registered at run time); before
    that the names in the sources, so checking params does not import torch.
    """
    module = sys.modules.get(f"unlearning.{kind}s")
    if module is not None:
        names = getattr(module, f"{kind.upper()}S").names()
    else:
        from .catalog import registered_names

        names = registered_names(kind)
    if name not in names:
        raise ValueError(f"must be one of {names}; got {name!r}")
    return name


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _device(v: str) -> str:
    """A device name torch knows (whether this machine has it is checked by `flows.preflight`)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", v):
        raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
    return v


class DataConfig(Section):
    name: str = "digits"
    root: str | None = None
    download: bool = False
    task: Literal["classification", "regression"] | None = None  # None: the dataset's natural task
    labels: Literal["fine", "coarse"] | None = None  # cifar100 only: coarse = the 20 superclasses

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered("dataset", v)

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
        return _registered("model", v)

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

    _known_device = field_validator("device")(_device)


class EvaluateConfig(Section):
    oracle: bool = True
    # Unlearning seeds (runs of a method on one base; the first makes the registered version). params.yaml
    # says `seed` + `more_seeds`: DVC's templating cannot drop a list's first element; `seeds: [...]` also works.
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # Training seeds: `python -m unlearning` trains a base model and an oracle per seed; the pipeline keeps
    # its one base (train.seed or production) and trains an oracle per seed: the retrain band of the gates.
    training_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    mia_classifier: Literal["lr", "svc"] = "lr"  # entropy MIA of Bad Teaching: LR (paper) or SVC (repo)
    ain: bool = True
    ain_max_steps: int = Field(500, ge=1)
    device: str = "auto"

    _known_device = field_validator("device")(_device)

    @model_validator(mode="before")
    @classmethod
    def _split_seeds(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not {"seed", "more_seeds"} & data.keys():
            return data
        if "seeds" in data:
            raise ValueError("give the unlearning seeds either as `seeds` or as `seed` + `more_seeds`, not both")
        data = dict(data)
        first, more = data.pop("seed", 0), data.pop("more_seeds", None) or []
        if not isinstance(first, int) or isinstance(first, bool) or not isinstance(more, list):
            raise ValueError(f"`seed` must be an integer and `more_seeds` a list; got {first!r} and {more!r}")
        return {**data, "seeds": [first, *more]}

    @field_validator("seeds", "training_seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct; got {v}")
        return v


class Gates(Section):
    """Promotion gates in accuracy points (0-100); `null` switches a gate off. The one set of defaults.

    With an oracle: forget_acc_vs_oracle, mia_vs_oracle, retain_acc_drop, test_acc_drop, and on sample
    requests membership_vs_oracle (needs two or more retrains: evaluate.training_seeds). Without one
    (evaluate.oracle: false) the oracle-free gates replace the oracle ones: forget_acc_max and mia_max
    (class / subclass requests), forget_acc_vs_test (sample requests: forgotten samples look unseen).
    Oracle-free defaults from digits/mlp class 3: forget acc / entropy MIA of the oracle 0 / 0.11,
    finetune (forgets nothing) 1.0 / 0.71, random_label 0.0 / 0.01.
    """

    forget_acc_vs_oracle: float | None = Field(2.0, ge=0.0)  # |forget acc - oracle forget acc|
    mia_vs_oracle: float | None = Field(5.0, ge=0.0)  # |entropy MIA - oracle entropy MIA|
    # random / ids requests, in log-odds: |paired membership shift - retrains'| (metrics.membership)
    membership_vs_oracle: float | None = Field(0.1, ge=0.0)
    retain_acc_drop: float | None = Field(2.0, ge=0.0)  # original retain acc - retain acc
    test_acc_drop: float | None = Field(2.0, ge=0.0)  # original test acc - test acc (kept classes)
    forget_acc_max: float | None = Field(5.0, ge=0.0)  # oracle-free, class requests: forget acc
    mia_max: float | None = Field(20.0, ge=0.0)  # oracle-free, class requests: entropy-MIA member rate
    forget_acc_vs_test: float | None = Field(2.0, ge=0.0)  # oracle-free, sample requests: forget - test acc

    def limits(self) -> dict[str, float]:
        """The gates that are switched on, by name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PromoteConfig(Section):
    gates: Gates = Field(default_factory=Gates)


class CalibrationConfig(Section):
    """`python -m unlearning calibrate` (`unlearning.calibration`) and the profiles that runs pick up.

    A run fills method settings left unset from `<profile_dir>/<hash(data, model, recipe, request kind)>.json`.
    """

    use_profile: bool = True  # false: runs ignore calibration profiles
    profile_dir: str = "outputs/calibration"  # profiles; proxy models are cached under <profile_dir>/models
    proxies: int = Field(2, ge=1)  # proxy requests searched on; one more is held out to report generalisation
    trials: int = Field(20, ge=1)  # at most this many trials per method
    budget_s: float = Field(300.0, gt=0.0)  # wall time per method's search (a trial in flight finishes)
    startup_trials: int = Field(5, ge=1)  # random trials before TPE models the objective
    tie_gap: float = Field(0.1, ge=0.0)  # gap points within which the faster setting wins
    # keep the defaults when the searched choice scores more than this many gap points worse than them on
    # the held-out proxy (null: never); bench/heldout_veto.py replays it over stored runs
    heldout_veto: float | None = Field(1.0, ge=0.0)
    seed: int = 0  # seeds the proxy draw and the TPE sampler
    methods: list[str] | None = None  # null: unlearn.methods

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str] | None) -> list[str] | None:
        from .catalog import method_catalogue

        names = [m["name"] for m in method_catalogue()]
        bad = [m for m in v or [] if m not in names]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; available: {names}")
        return v


class MethodSections(BaseModel):
    """`unlearn` checked by name only: `methods` and section names must be methods of the catalogue."""

    model_config = ConfigDict(frozen=True, extra="allow")

    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        from .catalog import method_catalogue

        names = [m["name"] for m in method_catalogue()]
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"methods"} - set(names))
            if unknown:
                raise ValueError(f"unknown method section {unknown[0]!r}; available: {names}")
            bad = [m for m in data.get("methods") or [] if m not in names]
            if bad:
                raise ValueError(f"unknown method {bad[0]!r}; available: {names}")
        return data


class CoreParams(BaseModel):
    """`params.yaml` with every section typed except the methods' own settings (checked by name only).

    For commands that never run a method (`unlearn status`, `promote`, `rollback`): no torch import.
    Commands that run methods validate everything (`Params`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    request: RequestConfig = Field(default_factory=lambda: RequestConfig(classes=[3]))
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    unlearn: MethodSections = Field(default_factory=MethodSections)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
