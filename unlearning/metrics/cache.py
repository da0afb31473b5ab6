"""A small content-keyed memo for evaluation work that repeats, unchanged, across `evaluate` calls.

Scoring several models against one oracle recomputes the oracle's side every time: its outputs and its
average-gap reference (an SVC fit), its AIN relearning count rt(oracle), and ZRF's random teacher. Those
depend only on the oracle's weights (or the architecture), the samples, the seed and the settings, so
they are memoised under a digest of exactly those (and so are a model's own outputs, which the pipeline's
plots need again right after `evaluate`). Keys hash content, never object identity: an oracle
loaded again from its checkpoint hits, one trained further in place misses. Bounded (LRU), thread-safe,
and one computation per key at a time, so concurrent evaluations of one oracle compute it once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ..data import Samples

T = TypeVar("T")


def _update(h: Any, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    # Raw bytes of any dtype (bf16 included): a flat uint8 view of a contiguous CPU copy.
    h.update(t.reshape(-1).cpu().contiguous().view(torch.uint8).numpy())


def digest(*parts: Tensor | nn.Module | Samples | str | float | int | bool | None) -> str:
    """SHA-256 of tensors, modules (class, spec, state_dict), sample sets and plain values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            _update(h, part)
        elif isinstance(part, nn.Module):
            h.update(type(part).__name__.encode())
            h.update(json.dumps(getattr(part, "spec", None), sort_keys=True, default=str).encode())
            for name, t in part.state_dict().items():
                h.update(name.encode())
                _update(h, t)
        elif isinstance(part, Samples):
            for t in (part.x, part.y):
                _update(h, t)
            h.update(repr((part.mean, part.std)).encode())
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


class Memo:
    """LRU memo: `get(key, compute)` returns the stored value or computes, stores and returns it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # a second caller of the same key waits for the first one's value
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                self._busy.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


RELEARN = Memo(64)  # rt(model) per (model, data, target, settings): a few ints
ORACLE = Memo(4)  # the oracle's outputs on the evaluation sets and its average-gap reference
TEACHER = Memo(8)  # ZRF's random teacher's outputs per (architecture, samples, device)
OUTPUTS = Memo(2)  # the last models' outputs on the evaluation sets (evaluate, then mia_scores for the plots)


def clear_cache() -> None:
    """Forget every memoised value (benchmarks use it to time cold evaluations)."""
    for memo in (RELEARN, ORACLE, TEACHER, OUTPUTS):
        memo.clear()
