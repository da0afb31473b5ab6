"""The models a proxy is scored with: a base trained on the whole universe, an oracle per proxy.

Both are trained with the live run's recipe (`unlearning.steps.train_original` / `train_oracle`, the same
init seeds) and cached on disk under a content key: hash(data version, universe ids, proxy ids, model,
train recipe, seed), the same parts as the pipeline's oracle key. A second calibration of the same data,
model and recipe, for any method, loads them instead of training again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..hashing import content_hash
from ..models import load_checkpoint, save_checkpoint
from ..params import Params
from ..requests import Split
from ..steps import train_oracle, train_original
from ..training import LogFn
from ..utils import get_device
from .proxies import ProxyRequest, proxy_split
from .universe import Universe


@dataclass
class ProxyCase:
    """A request ready to score a method on: its split, the base it unlearns from, and its oracle."""

    split: Split
    base: nn.Module
    oracle: nn.Module
    proxy: ProxyRequest | None = None  # None: the live request (`live.score_live`)


def model_key(params: Params, data_version: str, universe: Universe, role: str,
              proxy: ProxyRequest | None = None) -> str:
    """Content key of a proxy base (`proxy` None) or of a proxy's oracle."""
    train = params.train.model_dump(exclude={"device", "compile"})  # how, not what, is trained
    return content_hash({"role": role, "data": data_version, "universe": universe.key,
                         "forget": proxy.key if proxy else None, "model": params.model.model_dump(),
                         "train": train, "seed": params.train.seed}, 16)


class ProxyModels:
    """Trains (or loads) the universe base and each proxy's oracle; `cache_dir` None keeps nothing on disk."""

    def __init__(self, params: Params, universe: Universe, data_version: str, cache_dir: Path | None,
                 log: LogFn | None = None) -> None:
        self.params, self.universe, self.data_version = params, universe, data_version
        self.cache_dir = cache_dir
        self.log = log or (lambda event: None)
        self.device = get_device(params.train.device)
        self.trained: list[str] = []  # keys trained in this process (the rest came from the cache)
        self._base: nn.Module | None = None

    def _get(self, role: str, split: Split, proxy: ProxyRequest | None, train: Any) -> nn.Module:
        key = model_key(self.params, self.data_version, self.universe, role, proxy)
        path = self.cache_dir / f"{key}.pt" if self.cache_dir is not None else None
        what = {"stage": "calibrate", "model": role, "proxy": proxy.description if proxy else None, "key": key}
        if path is not None and path.exists():
            self.log({**what, "cached": str(path)})
            return load_checkpoint(path, self.device).eval()
        t0 = time.perf_counter()
        model, _ = train(self.params, split)
        self.log({**what, "trained_s": round(time.perf_counter() - t0, 2)})
        self.trained.append(key)
        if path is not None:
            save_checkpoint(model, path)
        return model.eval()

    def case(self, proxy: ProxyRequest) -> ProxyCase:
        """The proxy's split, the universe base and the proxy's oracle."""
        split = proxy_split(self.universe, proxy)
        if self._base is None:  # trained on forget + retain = the whole universe: one base for all proxies
            self._base = self._get("proxy_base", split, None, train_original)
        return ProxyCase(split, self._base, self._get("proxy_oracle", split, proxy, train_oracle), proxy)
