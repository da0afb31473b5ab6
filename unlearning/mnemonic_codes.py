"""Mnemonic codes (Shibata et al., IJCAI 2021; Yamashita et al., ACML 2024), METHODS.md §6.1.

One random code per class; during training each sample is replaced by its class code with probability
`t_mix`. The `mnemonic` unlearning method later reads only these codes, never real data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_codes(num_classes: int, in_shape: tuple[int, ...], seed: int) -> Tensor:
    """One code per class, uniform in [0, 1] and not normalised, as in the official `torch.rand(shape)`.

    Args:
        num_classes: number of classes C.
        in_shape: the model's input shape (without the batch axis).
        seed: seed of the codes (they are part of the model: store them with it).

    Returns:
        Codes, [C, *in_shape], float32 on the CPU.
    """
    if num_classes < 1:
        raise ValueError(f"'num_classes' of make_codes must be >= 1; got {num_classes}")
    if not in_shape or any(d < 1 for d in in_shape):
        raise ValueError(f"'in_shape' of make_codes must be non-empty positive sizes; got {tuple(in_shape)}")
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((num_classes, *in_shape), generator=gen)


def code_mixing_loss(codes: Tensor, t_mix: float,
                     generator: torch.Generator) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """A `training.fit` loss that swaps each sample for its class code with probability `t_mix`.

    Whole replacement, not a blend, applied to the prepared (normalised, augmented) batch: the official
    loader replaces the transformed image by the raw code, so codes are never normalised or augmented.

    Args:
        codes: [C, *in_shape] class codes (`make_codes`).
        t_mix: replacement probability, in [0, 1].
        generator: CPU generator for the replacement draws (seeded by the caller).

    Returns:
        loss_fn(model, x, y) -> cross-entropy on the mixed batch.
    """
    if not 0.0 <= t_mix <= 1.0:
        raise ValueError(f"'t_mix' of code_mixing_loss must be in [0, 1]; got {t_mix}")
    if codes.dim() < 2:
        raise ValueError(f"'codes' must be [C, *in_shape]; got shape {tuple(codes.shape)}")

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != tuple(codes.shape[1:]):
            raise ValueError(f"codes have shape {tuple(codes.shape[1:])} but inputs {tuple(x.shape[1:])}")
        swap = (torch.rand(len(y), generator=generator) < t_mix).to(x.device)  # [B]
        code_x = codes.to(device=x.device, dtype=x.dtype)[y]  # [B, *in_shape]
        mixed = torch.where(swap.view(-1, *([1] * (x.dim() - 1))), code_x, x)
        return F.cross_entropy(model(mixed).float(), y)

    return loss_fn
