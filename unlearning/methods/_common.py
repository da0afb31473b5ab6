"""Helpers shared by several methods (not a method: the leading underscore keeps it unregistered)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from ..data import Samples
from ..models import fresh_copy


def cycle(samples: Samples, batch_size: int, generator: torch.Generator,
          augment: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless reshuffled batches: pairs a short set (forget) with a long one (retain)."""
    while True:
        yield from samples.batches(batch_size, generator=generator, augment=augment)


def random_other_labels(y: Tensor, num_classes: int, generator: torch.Generator,
                        exclude: list[int] | None = None) -> Tensor:
    """Uniform random labels != the true label (and not in `exclude`, e.g. the forgotten classes)."""
    banned = torch.zeros(len(y), num_classes, dtype=torch.bool)
    banned[torch.arange(len(y)), y.cpu()] = True
    if exclude:
        banned[:, exclude] = True
    if banned.all(dim=1).any():
        raise ValueError("no label left to draw: every class is excluded")
    weights = (~banned).float()
    return torch.multinomial(weights, 1, generator=generator).flatten().to(y.device)


class StepBudget:
    """A cap on optimiser steps shared by several passes (None: no cap).

    Gradient-ascent terms are unbounded, so how far a model drifts grows with the number of ascent steps:
    an epoch count tuned on a small forget set means hundreds of steps on a large one. Methods wrap each
    pass's batches in `take` and stop once the budget is `spent`.
    """

    def __init__(self, max_steps: int | None) -> None:
        self.left = max_steps

    def take(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in batches:
            if self.left is not None:
                if self.left <= 0:
                    return
                self.left -= 1
            yield batch

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


def fresh_network(model: nn.Module, seed: int) -> nn.Module:
    """A randomly initialised network of the same architecture (registry spec, else reset_parameters)."""
    if getattr(model, "spec", None) is not None:
        return fresh_copy(model, seed=seed)
    torch.manual_seed(seed)
    new = copy.deepcopy(model)
    for m in new.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return new
