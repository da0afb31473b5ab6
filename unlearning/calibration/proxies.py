"""Proxy requests: requests of the live request's kind, drawn inside the universe, disjoint from each other.

class: other classes, as many per proxy as the live request forgets; subclass: other fine classes;
random: other random subsets of the same fraction; ids: other random id sets of the same size; range:
other windows of the same number of samples by target. Draws are seeded and deterministic. Since the
universe holds neither the live request's samples nor the excluded ones, proxies are disjoint from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..hashing import content_hash
from ..requests import Split
from .universe import Universe


@dataclass(frozen=True)
class ProxyRequest:
    """One proxy: the universe positions it forgets, their original ids, and its classes / target range."""

    scenario: str
    positions: Tensor
    ids: list[int]
    description: str
    classes: list[int] | None = None
    target_range: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        return content_hash({"scenario": self.scenario, "ids": self.ids}, 16)

    def summary(self) -> dict[str, Any]:
        return {"description": self.description, "scenario": self.scenario, "forget": len(self.ids),
                "classes": self.classes, "key": self.key}


def _proxy(universe: Universe, scenario: str, positions: Tensor, description: str, **kw: Any) -> ProxyRequest:
    positions = torch.sort(positions).values
    return ProxyRequest(scenario, positions, universe.ids[positions].tolist(), description, **kw)


def _class_groups(labels: Tensor, size: int, count: int, gen: torch.Generator, what: str) -> list[list[int]]:
    present = torch.unique(labels)
    if len(present) < size * count:
        raise ValueError(f"{count} proxy requests of {size} {what}(es) each need {size * count} other {what}es; "
                         f"the calibration data has {len(present)}: lower calibration.proxies")
    order = present[torch.randperm(len(present), generator=gen)].tolist()
    return [sorted(order[i * size:(i + 1) * size]) for i in range(count)]


def _subsets(universe: Universe, size: int, count: int, gen: torch.Generator, what: str) -> list[Tensor]:
    n = len(universe.ids)
    if size < 1 or size * count >= n:
        raise ValueError(f"{count} disjoint proxy requests of {size} samples do not fit in the {n} samples "
                         f"left to calibrate on ({what}): lower calibration.proxies")
    perm = torch.randperm(n, generator=gen)
    return [perm[i * size:(i + 1) * size] for i in range(count)]


def draw_proxies(universe: Universe, count: int, seed: int = 0) -> list[ProxyRequest]:
    """`count` disjoint proxy requests of the live request's kind (the last one is held out by callers).

    Args:
        universe: what calibration may use (`build_universe`).
        count: proxies to draw.
        seed: seeds the draw.

    Returns:
        The proxies, in draw order.
    """
    if count < 1:
        raise ValueError(f"'count' of proxies must be >= 1; got {count}")
    gen = torch.Generator().manual_seed(91_733 + seed)
    ds, kind = universe.dataset, universe.scenario
    if kind == "class":
        groups = _class_groups(ds.y_train, universe.class_count or 1, count, gen, "class")
        return [_proxy(universe, kind, torch.nonzero(torch.isin(ds.y_train, torch.tensor(g))).flatten(),
                       f"proxy classes {[ds.classes[c] for c in g]}", classes=g) for g in groups]
    if kind == "subclass":
        groups = _class_groups(ds.fine_train, 1, count, gen, "subclass")
        names = ds.fine_classes or []
        return [_proxy(universe, kind, torch.nonzero(ds.fine_train == g[0]).flatten(),
                       f"proxy subclass {names[g[0]]!r}", classes=g) for g in groups]
    if kind == "random":
        size = max(1, int(round(universe.forget_fraction * len(universe.ids))))
        return [_proxy(universe, kind, p, f"proxy random {universe.forget_fraction:.1%} #{i + 1}")
                for i, p in enumerate(_subsets(universe, size, count, gen, "random"))]
    if kind == "ids":
        return [_proxy(universe, kind, p, f"proxy {universe.forget_size} ids #{i + 1}")
                for i, p in enumerate(_subsets(universe, universe.forget_size, count, gen, "ids"))]
    if kind == "range":
        return _ranges(universe, count, gen)
    raise ValueError(f"unknown request scenario {kind!r}")


def _ranges(universe: Universe, count: int, gen: torch.Generator) -> list[ProxyRequest]:
    """Windows of `forget_size` consecutive samples by target, at random non-overlapping slots."""
    y = universe.dataset.y_train
    order = torch.argsort(y, stable=True)
    size = universe.forget_size
    slots = len(order) // size
    if slots <= count:  # one slot at least must stay as retain data
        raise ValueError(f"{count} proxy target ranges of {size} samples do not fit in the {len(order)} samples "
                         "left to calibrate on: lower calibration.proxies")
    chosen = torch.randperm(slots, generator=gen)[:count].tolist()
    out = []
    for s in chosen:
        pos = order[s * size:(s + 1) * size]
        lo, hi = float(y[pos].min()), float(y[pos].max())
        out.append(_proxy(universe, "range", pos, f"proxy targets in [{lo:g}, {hi:g}]", target_range=(lo, hi)))
    return out


def proxy_split(universe: Universe, proxy: ProxyRequest) -> Split:
    """The proxy as a `Split` of the universe's dataset: forget = the proxy, retain = the rest of the universe."""
    ds = universe.dataset
    forget = torch.zeros(len(universe.ids), dtype=torch.bool)
    forget[proxy.positions] = True
    mask = None
    if proxy.scenario == "class":
        mask = torch.isin(ds.y_test[universe.test_idx], torch.tensor(proxy.classes))
    elif proxy.scenario == "subclass":
        mask = torch.isin(ds.fine_test[universe.test_idx], torch.tensor(proxy.classes))
    elif proxy.scenario == "range":
        lo, hi = proxy.target_range
        y = ds.y_test[universe.test_idx]
        mask = (y >= lo) & (y <= hi)
    return Split(ds, proxy.scenario, torch.nonzero(forget).flatten(), torch.nonzero(~forget).flatten(),
                 universe.test_idx, universe.val_idx, proxy.classes, mask, proxy.description)
