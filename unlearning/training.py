"""One training loop for the base model, the retrain oracle and every fine-tuning style method.

Batches come from `Samples.batches` (index permutation over on-device tensors, no DataLoader);
on CUDA bf16 autocast and channels_last conv weights; seeded; an optional progress callback receives
one dict per epoch. On the CPU nothing of the CUDA path applies, so CPU results do not depend on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .data import Samples

LossFn = Callable[..., Tensor]
LogFn = Callable[[dict[str, Any]], None]


def task_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy for class labels, L1 for regression targets (the DRU papers' loss)."""
    if targets.dtype.is_floating_point:
        return F.l1_loss(outputs.float(), targets)
    return F.cross_entropy(outputs.float(), targets)


def per_sample_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-sample version of `task_loss` (MIA signals, ∇τ validation loss)."""
    if targets.dtype.is_floating_point:
        return (outputs.float() - targets).abs()
    return F.cross_entropy(outputs.float(), targets, reduction="none")


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW."""
    if lr <= 0:
        raise ValueError(f"'lr' must be > 0; got {lr}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"'optimizer' must be one of ['sgd', 'adam', 'adamw']; got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, name: str, total_steps: int,
                   end_factor: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step LR schedule: none, cosine (to 0), linear (1 -> end_factor), onecycle (warm-up 25 %)."""
    total_steps = max(1, total_steps)
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    if name == "linear":
        return torch.optim.lr_scheduler.LinearLR(opt, 1.0, max(end_factor, 1e-3), total_steps)
    if name == "onecycle":
        if total_steps == 1:  # one step: torch's one-cycle would take it at max_lr / 250000 (no update)
            return None
        lrs = [g["lr"] for g in opt.param_groups]
        # torch divides by the warm-up's length, 0.25 * total - 1 steps: 0 at 4 steps (ZeroDivisionError)
        pct = 0.25 if total_steps != 4 else 0.5
        return torch.optim.lr_scheduler.OneCycleLR(opt, lrs, total_steps=total_steps, pct_start=pct)
    raise ValueError(f"'scheduler' must be one of ['none', 'cosine', 'linear', 'onecycle']; got {name!r}")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def device_layout(model: nn.Module) -> nn.Module:
    """On CUDA, conv weights in channels_last (NHWC): cuDNN's bf16 tensor-core kernels want it, and a conv
    whose weight is channels_last returns channels_last. Only 4-D tensors change; a no-op on the CPU and
    when already converted (the optimiser keeps the same parameter objects)."""
    if model_device(model).type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def optimize(model: nn.Module, loss_fn: LossFn, batches: Iterable[tuple], optimizer: torch.optim.Optimizer, *,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, grad_clip: float | None = None,
             train_mode: bool = True, after_step: Callable[[], None] | None = None) -> float:
    """Run one pass: for each batch, `loss_fn(model, *batch)`, backward, clip, step. Returns the mean loss.

    Loop-based methods supply only their loss; `after_step` lets a method restore frozen weights.
    """
    device_layout(model)
    model.train(train_mode)
    device = model_device(model)
    total, count = torch.zeros((), device=device), 0
    for batch in batches:
        with autocast(device):
            loss = loss_fn(model, *batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total += loss.detach().float()
        count += 1
    return float(total) / max(count, 1)


def supervised_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return task_loss(model(x), y)


def fit(model: nn.Module, samples: Samples, cfg: TrainConfig, *, loss_fn: LossFn = supervised_loss,
        log: LogFn | None = None, stage: str = "train") -> nn.Module:
    """Train `model` in place on `samples` with the recipe in `cfg`; returns the model.

    Used for the base model, the retrain oracle (given a fresh model) and fine-tuning baselines.
    """
    if len(samples) == 0:
        raise ValueError(f"{stage}: no training samples")
    gen = torch.Generator().manual_seed(cfg.seed)
    augment = samples.augmentable if cfg.augment is None else cfg.augment
    step_model = torch.compile(device_layout(model)) if cfg.compile else model
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    steps_per_epoch = -(-len(samples) // cfg.batch_size)
    sched = make_scheduler(opt, cfg.scheduler, cfg.epochs * steps_per_epoch)
    for epoch in range(cfg.epochs):
        batches = samples.batches(cfg.batch_size, generator=gen, augment=augment)
        loss = optimize(step_model, loss_fn, batches, opt, scheduler=sched, grad_clip=cfg.grad_clip)
        if log is not None:
            log({"stage": stage, "epoch": epoch + 1, "epochs": cfg.epochs, "loss": loss})
    model.eval()
    return model


# Rows per forward pass in `predict`. On the CPU a batch's activations should stay in cache: the MNIST cnn
# (width 16, 1 thread) scored 8k test images at 105-140 us each in batches of 64-256, 210 us at 512 and
# 310 us at 1,024, with bitwise-equal outputs (bench/bench_evaluate.py). GPUs want big batches.
PREDICT_BATCH = {"cpu": 256}
PREDICT_BATCH_DEFAULT = 1024


def predict_batch(device: torch.device) -> int:
    """`predict`'s batch size on `device`."""
    return PREDICT_BATCH.get(device.type, PREDICT_BATCH_DEFAULT)


@torch.no_grad()
def predict(model: nn.Module, samples: Samples, batch_size: int | None = None) -> Tensor:
    """Outputs (logits, or predictions for regression) for all samples, in eval mode, float32.

    `batch_size` defaults to `predict_batch(device)`; a row's output does not depend on it.
    """
    was_training = model.training
    device_layout(model).eval()
    device = model_device(model)
    outs = []
    for xb, _ in samples.to(device).batches(batch_size or predict_batch(device), shuffle=False):
        with autocast(device):
            outs.append(model(xb).float())
    model.train(was_training)
    if not outs:
        return torch.empty(0, device=device)
    return torch.cat(outs)
