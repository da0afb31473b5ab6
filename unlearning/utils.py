"""Seeding, device choice (and CPU threads), timing and hashing. Nothing else."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .hashing import content_hash  # noqa: F401 - re-exported: callers import it from here


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def cpu_threads(limit: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Cap torch's intra-op threads at `limit` for a block on the CPU (no-op on other devices or for None).

    The previous count is restored afterwards. With torch's OpenMP backend the setting belongs to the
    calling thread, so concurrent callers in other threads keep their own.
    """
    before = torch.get_num_threads()
    if limit is None or torch.device(device).type != "cpu" or limit >= before:
        yield
        return
    torch.set_num_threads(limit)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA work so wall times are honest."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


@contextmanager
def timed(device: torch.device | str | None = None) -> Iterator[dict[str, float]]:
    """Measure wall time of a block (CUDA synchronised at both ends); result in `t["s"]`."""
    out: dict[str, float] = {}
    synchronize(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        synchronize(device)
        out["s"] = time.perf_counter() - start


