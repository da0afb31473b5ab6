"""Scoring one setting of one method on proxies: the objective of the search, without the optimiser.

The objective is the library's distance to the oracle: SalUn's average gap (`oracle/avg_gap`, points,
`unlearning.metrics.average_gap`) for classification, the Wasserstein-1 distance of forget predictions
(`oracle/w1`) for regression, where the average gap is not defined. Lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import EvaluateConfig
from ..methods import METHODS, MethodConfig, unlearn
from ..metrics import evaluate
from ..params import Params
from ..utils import get_device
from .proxy_models import ProxyCase


def objective_key(task: str) -> str:
    """The metric calibration minimises for a task."""
    return "oracle/w1" if task == "regression" else "oracle/avg_gap"


def explicit_settings(params: Params, name: str) -> dict[str, Any]:
    """The method's settings that params.yaml or --set gave explicitly (they always win)."""
    cfg = params.unlearn.method_config(name)
    return cfg.model_dump(include=set(cfg.model_fields_set))


def setting_config(params: Params, name: str, values: dict[str, Any]) -> MethodConfig:
    """The method's config with `values` on top of what params set explicitly (validated)."""
    return METHODS.get(name).config.model_validate({**explicit_settings(params, name), **values})


@dataclass
class Score:
    """A setting's objective on a list of proxies: mean gap, mean method time, one gap per proxy."""

    gap: float
    time_s: float
    gaps: list[float] = field(default_factory=list)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.gap)


def score_on(params: Params, name: str, cfg: MethodConfig, cases: Sequence[ProxyCase], seed: int,
             after_each: Callable[[int, float], None] | None = None) -> Score:
    """Run `name` with `cfg` on each proxy's base and score it against the proxy's oracle.

    `after_each(i, mean_so_far)` is called after proxy i (the search reports it and may prune there).
    """
    device = get_device(params.train.device)
    ecfg = EvaluateConfig(ain=False, mia_classifier=params.evaluate.mia_classifier)
    gaps, times = [], []
    for i, case in enumerate(cases):
        res = unlearn(name, case.base, case.split, cfg, seed=seed, device=device)
        metrics = evaluate(res.model, case.split, oracle=case.oracle, cfg=ecfg, seed=seed)
        gaps.append(metrics.get(objective_key(case.split.dataset.task), float("nan")))
        times.append(res.time_s)
        if after_each is not None:
            after_each(i, sum(gaps) / len(gaps))
    return Score(sum(gaps) / len(gaps), sum(times) / len(times), gaps)
