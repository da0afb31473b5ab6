"""Parts of the GPU protocol (`gpu_protocol.py`): the recipe, the time budget, data on the device, the timed steps.

What is timed: each training (original, one oracle per request) and each method, from the library's own
CUDA-synchronised timers, after a warm-up (cuDNN/cuBLAS handles, kernels of both batch sizes, the first
optimiser steps) that no figure includes. Scoring is timed apart and is in no speedup.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.config import EvaluateConfig, RequestConfig, TrainConfig
from unlearning.data import Dataset, Samples
from unlearning.datasets import load_dataset
from unlearning.methods import unlearn, unsupported_reason
from unlearning.metrics import evaluate
from unlearning.models import Net, create_model
from unlearning.requests import Split, resolve
from unlearning.training import fit
from unlearning.utils import synchronize, timed

# The fast methods: those whose cost in METHODS.md is a fraction of retraining, at their default settings
# (ssd: two passes, no training; unsir: noise + two short epochs on a retain subset, class requests only;
# bad_teaching: 5 passes over D_f + 30 % of D_r; neggrad: <= 15 steps; neggrad_plus: <= 200 steps;
# random_label: 3 epochs; nabla_tau: ~3 epochs of D_r). Left out: finetune, scrub, salun (5-10 epochs of
# D_r), gkt, emmn, lightweight (slow or class-only), mnemonic (needs a base trained with codes).
FAST_METHODS = ["ssd", "unsir", "bad_teaching", "neggrad", "neggrad_plus", "random_label", "nabla_tau"]
# Their estimated cost in epochs of full training, both requests together (from the counts above: bad_teaching
# ~3, random_label ~4 at batch 128, nabla_tau ~5, the rest ~2): what the budget reserves for them.
METHOD_EPOCHS = 30.0
EVAL_GUESS_S = 4.0  # scoring one model (no AIN), until the first one is measured
# --tiny only: fixed step budgets that do not shrink with the data (noise images, 200 steps) shortened.
TINY_METHOD_CONFIG = {"unsir": {"noise_size": 16, "noise_steps": 5}, "neggrad_plus": {"epochs": 2}}
SCENARIOS = {"class 3": RequestConfig(classes=[3]), "random 10%": RequestConfig(random=0.1)}


@dataclass(frozen=True)
class Recipe:
    """Original and oracle: SGD one-cycle (peak lr 0.4 for batch 512, i.e. 0.1 per 128), weight decay 5e-4,
    label smoothing 0.1, crop + flip on the device. Aimed at >= 93 % on the JPEG test set, with margin over
    the ~1 point that JPEG re-encoding costs against the pickles."""

    epochs: int = 24
    width: int = 64
    batch_size: int = 512
    lr: float = 0.4
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    compile: bool = False

    @classmethod
    def for_run(cls, *, tiny: bool, epochs: int | None, width: int | None, compile: bool) -> Recipe:
        base = cls(epochs=2, width=4, batch_size=64) if tiny else cls()
        return dataclasses.replace(base, epochs=epochs or base.epochs, width=width or base.width, compile=compile)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer="sgd", lr=self.lr,
                           momentum=0.9, weight_decay=self.weight_decay, scheduler="onecycle", augment=True,
                           compile=self.compile, seed=seed)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing)

    def as_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "optimizer": "sgd momentum 0.9", "scheduler": "onecycle",
                "augment": "crop + flip"}


class BudgetExceeded(RuntimeError):
    """The projected wall time passes the budget."""


@dataclass
class Budget:
    """Projects the run's wall time from the measured epoch time; raises before the budget would be passed.

    Left to do, in epochs of full training: the trainings not yet run plus `METHOD_EPOCHS` for the methods
    (shared out per method run); plus the models still to score at the measured scoring time.
    """

    total_s: float
    start: float
    epochs: int
    n_methods: int
    evals: int
    epoch_s: float | None = None
    eval_s: float = EVAL_GUESS_S
    trainings_left: float = 3.0
    methods_left: float = METHOD_EPOCHS

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def projected(self, epochs_done_now: int = 0) -> float:
        epochs_left = self.trainings_left * self.epochs - epochs_done_now + self.methods_left
        return self.elapsed() + (self.epoch_s or 0.0) * epochs_left + self.eval_s * self.evals

    def check(self, where: str, epochs_done_now: int = 0) -> None:
        if self.epoch_s is None:
            return
        total = self.projected(epochs_done_now)
        if total > self.total_s:
            fixed = self.elapsed() - self.epoch_s * epochs_done_now + self.eval_s * self.evals
            fit_epochs = int((self.total_s - fixed - self.epoch_s * self.methods_left)
                             // (self.epoch_s * max(self.trainings_left, 1e-9)))
            raise BudgetExceeded(f"at {where}: projected {total:.0f} s > budget {self.total_s:.0f} s "
                                 f"({self.epoch_s:.2f} s per epoch); --epochs {max(fit_epochs, 0)} would fit")

    def method_done(self) -> None:
        self.methods_left = max(0.0, self.methods_left - METHOD_EPOCHS / (len(SCENARIOS) * self.n_methods))

    def scored(self, seconds: float) -> None:
        self.eval_s, self.evals = seconds, max(0, self.evals - 1)


def load_data(name: str, root: str, device: torch.device, tiny: tuple[int, int] | None) -> Dataset:
    """The dataset, every tensor moved to `device` once (batches index it there); `tiny`: seeded subsets."""
    ds = load_dataset(name, root)
    if tiny is not None:
        gen = torch.Generator().manual_seed(0)
        tr = torch.randperm(len(ds.y_train), generator=gen)[:tiny[0]].sort().values
        te = torch.randperm(len(ds.y_test), generator=gen)[:tiny[1]].sort().values
        ds = dataclasses.replace(ds, x_train=ds.x_train[tr], y_train=ds.y_train[tr], x_test=ds.x_test[te],
                                 y_test=ds.y_test[te])
    return dataclasses.replace(ds, x_train=ds.x_train.to(device), y_train=ds.y_train.to(device),
                               x_test=ds.x_test.to(device), y_test=ds.y_test.to(device))


def resolve_on(request: RequestConfig, ds: Dataset) -> Split:
    """The request's split, its ids resolved on a CPU copy (as everywhere else), its data left on the device."""
    cpu = dataclasses.replace(ds, x_train=ds.x_train.cpu(), y_train=ds.y_train.cpu(), x_test=ds.x_test.cpu(),
                              y_test=ds.y_test.cpu())
    return dataclasses.replace(resolve(request, cpu), dataset=ds)


def new_model(ds: Dataset, recipe: Recipe, seed: int, device: torch.device) -> Net:
    torch.manual_seed(seed)
    return create_model("resnet18", ds.num_classes, ds.in_shape, width=recipe.width).to(device)


def warm_up(ds: Dataset, recipe: Recipe, device: torch.device) -> float:
    """One short fit at the recipe's batch and at the methods' small batch, then a prediction; untimed work."""
    t0 = time.perf_counter()
    part = ds.train(device).subset(torch.arange(min(len(ds.y_train), 4 * recipe.batch_size)))
    model = new_model(ds, recipe, 123, device)
    for batch in (recipe.batch_size, 64):
        # No schedule: torch's OneCycleLR divides by zero below 8 steps, and the LR does not matter here.
        cfg = dataclasses.replace(recipe, epochs=1, batch_size=batch, compile=False).train_config(123)
        cfg = cfg.model_copy(update={"scheduler": "none"})
        fit(model, part, cfg, loss_fn=recipe.loss, stage="warm-up")
    evaluate(model, resolve_on(RequestConfig(classes=[3]), ds), cfg=EvaluateConfig(ain=False))
    synchronize(device)
    return time.perf_counter() - t0


def train(samples: Samples, recipe: Recipe, ds: Dataset, *, seed: int, budget: Budget, stage: str) -> tuple[Net, float]:
    """Train a fresh ResNet-18 with the recipe; the epoch time feeds the budget (projection after epoch 2)."""
    device = samples.device
    model = new_model(ds, recipe, seed, device)
    marks = [time.perf_counter()]

    def on_epoch(event: dict) -> None:
        marks.append(time.perf_counter())
        epoch = event["epoch"]
        print(f"  {stage}: epoch {epoch}/{recipe.epochs}, loss {event['loss']:.3f}, "
              f"{marks[-1] - marks[-2]:.1f} s", flush=True)
        if epoch == min(2, recipe.epochs):
            budget.epoch_s = marks[-1] - marks[-2]
            budget.check(f"{stage} epoch {epoch}", epochs_done_now=epoch)

    budget.check(f"start of {stage}")
    with timed(device) as t:
        fit(model, samples, recipe.train_config(seed), loss_fn=recipe.loss, log=on_epoch, stage=stage)
    budget.trainings_left -= 1
    return model, t["s"]


def _score(model: nn.Module, split: Split, original: nn.Module, oracle: nn.Module, budget: Budget) -> dict:
    t0 = time.perf_counter()
    metrics = evaluate(model, split, original=original, oracle=oracle, cfg=EvaluateConfig(ain=False))
    budget.scored(time.perf_counter() - t0)
    return {**metrics, "eval_s": time.perf_counter() - t0}


def run_scenario(request: RequestConfig, ds: Dataset, original: Net, recipe: Recipe, methods: list[str],
                 device: torch.device, budget: Budget, configs: dict[str, dict] | None = None) -> dict:
    """Oracle (retrain on D_r with the same recipe) and each method on one request, scored against the oracle."""
    split = resolve_on(request, ds)
    print(f"{split.description}: {len(split.forget_idx)} forget / {len(split.retain_idx)} retain", flush=True)
    oracle, t_oracle = train(split.retain(device), recipe, ds, seed=7_919, budget=budget,
                             stage=f"oracle ({split.description})")
    out: dict = {"request": split.summary(), "oracle": {"time_s": t_oracle, **_score(oracle, split, original,
                                                                                     oracle, budget)}}
    out["original"] = _score(original, split, original, oracle, budget)
    budget.evals += 1  # the original's score on this request was not in the plan
    out["methods"] = {}
    for name in methods:
        reason = unsupported_reason(name, split)
        if reason:
            out["methods"][name] = {"skipped": reason}
            budget.method_done()
            continue
        budget.check(f"{name} on {split.description}")
        res = unlearn(name, original, split, (configs or {}).get(name), seed=0, device=device)
        budget.method_done()
        metrics = _score(res.model, split, original, oracle, budget)
        out["methods"][name] = {"time_s": res.time_s, "speedup": t_oracle / res.time_s, **metrics}
        print(f"  {name}: {res.time_s:.2f} s ({t_oracle / res.time_s:.1f}x), forget {metrics['forget/acc']:.3f}, "
              f"test {metrics['test/acc']:.3f}, gap {metrics.get('oracle/avg_gap', float('nan')):.2f}", flush=True)
    return out
