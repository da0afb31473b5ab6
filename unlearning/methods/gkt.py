"""Gated Knowledge Transfer (GKT), zero-shot class unlearning (Chundawat et al., "Zero-Shot Machine
Unlearning", IEEE TIFS 2023, arXiv 2201.05629), METHODS.md §4.2.

Also home of the attention-transfer distance (Zagoruyko & Komodakis) that Blindspot (§5.1) reuses.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ._common import fresh_network
from .base import MethodConfig, UnlearnInputs, register_method
from .emmn import EMMNConfig, optimise_noise

# ----------------------------------------------------------------------------- attention transfer


def attention(x: Tensor) -> Tensor:
    """Attention map: L2-normalised mean over channels of x², flattened. x: [B, C, *spatial] -> [B, prod].

    Fully-connected activations [B, F] have no spatial axes; each unit is treated as a location
    (normalise x² over units), otherwise the map would be a constant 1.
    """
    a = x.float().pow(2)
    if a.dim() > 2:
        a = a.mean(1)
    return F.normalize(a.flatten(1), dim=1)


def attention_diff(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared difference of the two attention maps (the official repos' `attention_diff`)."""
    return (attention(x) - attention(y)).pow(2).mean()


def attention_loss(student_acts: list[Tensor], teacher_acts: list[Tensor]) -> Tensor:
    """Σ over all returned layers of `attention_diff`."""
    if len(student_acts) != len(teacher_acts):
        raise ValueError(f"activation lists differ in length: {len(student_acts)} vs {len(teacher_acts)}")
    return sum((attention_diff(s, t) for s, t in zip(student_acts, teacher_acts, strict=True)),
               torch.zeros((), device=student_acts[0].device))


def divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher ‖ student) at temperature T with F.kl_div's default 'mean' reduction (official code)."""
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)  # [B, C]
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return (torch.xlogy(p_t, p_t) - p_t * log_p_s).mean()  # == F.kl_div(log_p_s, p_t), 'mean' [QUIRK]


# ----------------------------------------------------------------------------- generator


class Generator(nn.Module):
    """The official GKT generator, with its output adapted to any image shape.

    z [B, z_dim] -> Linear -> [width, ⌈H/4⌉, ⌈W/4⌉] -> BN -> {Up x2, Conv3x3, BN, LeakyReLU} x 2 -> Conv3x3 to C
    -> resize to (H, W) when 4·⌈H/4⌉ != H -> BN(affine). For 32x32 this is exactly the official net
    (8 -> 16 -> 32); 28x28 grows 7 -> 14 -> 28 (the official 1-channel net reaches 28 with a 7x7 conv);
    8x8 digits grow 2 -> 4 -> 8. Non-image inputs [F] get a 2-hidden-layer MLP with the same final BN.
    """

    def __init__(self, in_shape: tuple[int, ...], z_dim: int = 128, width: int = 128) -> None:
        super().__init__()
        self.in_shape, self.z_dim = tuple(in_shape), z_dim
        if len(self.in_shape) == 3:
            c, h, w = self.in_shape
            self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
            self.width = width
            self.fc = nn.Linear(z_dim, width * self.h0 * self.w0)
            self.body = nn.Sequential(
                nn.BatchNorm2d(width),
                nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2),
                nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, 1, 1), nn.BatchNorm2d(width // 2),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width // 2, c, 3, 1, 1),
            )
            self.out_bn: nn.Module = nn.BatchNorm2d(c, affine=True)
        else:
            n = math.prod(self.in_shape)
            self.fc = nn.Linear(z_dim, width)
            self.body = nn.Sequential(nn.BatchNorm1d(width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                      nn.BatchNorm1d(width), nn.LeakyReLU(0.2), nn.Linear(width, n))
            self.out_bn = nn.BatchNorm1d(n, affine=True)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z)
        if len(self.in_shape) == 3:
            h = self.body(h.view(-1, self.width, self.h0, self.w0))  # [B, C, 4h0, 4w0]
            if tuple(h.shape[-2:]) != self.in_shape[1:]:
                h = F.interpolate(h, size=self.in_shape[1:], mode="bilinear", align_corners=False)
            return self.out_bn(h)  # [B, C, H, W]
        return self.out_bn(self.body(h)).view(-1, *self.in_shape)  # [B, *in_shape]


# ----------------------------------------------------------------------------- method


class GKTConfig(MethodConfig):
    """Official GKT defaults, except four CPU-sized / measured knobs (marked below).

    The paper/notebook runs 4000 cycles (44k G/S iterations), checkpoints every 50, a 128-wide generator
    and generator lr 1e-3; set `cycles: 4000, checkpoint_every: 50, gen_width: 128, gen_lr: 1e-3` to mirror
    it. Measured on digits (mlp student, class 3, one CPU thread; original retain-test 96.1 %):
    * the forget class leaks back as the student converges, the official MNIST run's pattern: with
      gen_lr 1e-3, forget-train accuracy is 0 % up to ~35 cycles, 0.7-1.4 % at 40, 14-29 % at 45 and
      53-57 % at 50 (seeds 0/1). The data-free probe below rises with it (5-6 % at 40, 33-73 % at 45), so
      the selected checkpoint (cycle 35) has forget 0 %, retain-test 84.8 / 89.5 %.
    * gen_lr 1e-4 keeps the generator closer to its broad initial distribution, which transfers better:
      selected checkpoints have forget 0 % and retain-test 91.8 / 94.9 / 87.9 % (seeds 0/1/2; 3e-4 gave
      91.1 / 92.6 / 86.8 %), 8-16 s per run on a loaded CPU core. gen_width 128 did not help (82.5 / 83.7 %).
    * not faster than retraining on CPU. MNIST cnn (width 16), 1 thread: a cycle costs 3.7-4.3 s (generator
      step 55 %, the 10 student steps with attention transfer 45 %), a batch-64 retraining step 0.034 s, so
      GKT beats a 5-epoch retrain (4,220 steps, ~145 s) only below 34-40 cycles (75 with a free generator).
      The official MNIST student needed 450-750 cycles to forget with retain 85-95 %; the digits cnn student
      is at 42 % after 60. Distilling a fresh net from synthetic samples takes more steps than training it
      on the real data; batching changes the cost per step, not that count.
    """

    cycles: int = Field(50, ge=1)  # CPU-sized; official 4000. One cycle = 1 G step + 10 S steps
    n_generator_iter: int = Field(1, ge=0)
    n_student_iter: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    z_dim: int = Field(128, ge=1)
    gen_width: int = Field(64, ge=2)  # official 128; 64 is ~4x faster on CPU
    gen_lr: float = Field(1e-4, gt=0.0)  # official 1e-3 (see above)
    student_lr: float = Field(1e-3, gt=0.0)
    temperature: float = Field(1.0, gt=0.0)
    beta_at: float = Field(250.0, ge=0.0)
    grad_clip: float = Field(5.0, gt=0.0)
    threshold: float = Field(0.01, gt=0.0, le=1.0)  # gate: keep samples with Σ_forget p ≤ threshold
    checkpoint_every: int = Field(5, ge=1)  # official: 50 (of 4000) cycles
    plateau_patience: int = Field(2, ge=0)  # ReduceLROnPlateau(x0.5) per checkpoint, on the window's losses
    empty_patience: int = Field(100, ge=1)  # gated-out batches in a row before reloading the generator
    max_empty: int = Field(10_000, ge=1)  # give up after this many empty batches in total
    student_train_mode: bool = True
    # Data-free checkpoint selection: class impressions of the forget classes (error-minimising noise of the
    # original, no data) probe leakage; eligible checkpoints label at most this fraction as a forget class.
    probe_per_class: int = Field(64, ge=1)
    max_probe_forget: float = Field(0.0, ge=0.0, le=1.0)  # official selection: forget accuracy ≈ 0
    eval_batches: int = Field(2, ge=1)  # fixed-z batches scoring teacher agreement at each checkpoint
    no_search: ClassVar[str] = ("a run takes 8-16 s on a CPU core even CPU-sized, and its "
                                 "checkpoint selection is already data-free")


def _forget_mass(logits: Tensor, forget: list[int]) -> Tensor:
    """Σ over forget classes of softmax probability, [B]."""
    return F.softmax(logits.float(), dim=1)[:, forget].sum(1)


class _Selector:
    """Scores student checkpoints without real data and keeps the best one.

    Score: teacher agreement (argmax) on gated samples from a fixed z set; a checkpoint is eligible when
    the student labels at most `max_probe_forget` of the forget-class impressions as a forget class.
    """

    def __init__(self, teacher: nn.Module, probes: Tensor, z_eval: list[Tensor], forget: list[int],
                 cfg: GKTConfig) -> None:
        self.teacher, self.probes, self.z_eval, self.forget, self.cfg = teacher, probes, z_eval, forget, cfg
        self.best: tuple[tuple[int, float], dict] | None = None

    @torch.no_grad()
    def __call__(self, student: nn.Module, generator: Generator, cycle: int) -> dict[str, float]:
        was = student.training, generator.training
        student.eval()
        agree, total = 0.0, 0
        for z in self.z_eval:
            x = generator(z)  # train-mode BN, as the samples the student learned from
            t = self.teacher(x)
            keep = _forget_mass(t, self.forget) <= self.cfg.threshold
            if keep.any():
                agree += float((student(x[keep]).argmax(1) == t[keep].argmax(1)).sum())
                total += int(keep.sum())
        forget_set = torch.tensor(self.forget, device=self.probes.device)
        probe_rate = float(torch.isin(student(self.probes).argmax(1), forget_set).float().mean())
        student.train(was[0])
        generator.train(was[1])
        row = {"cycle": cycle, "agreement": agree / max(total, 1), "probe_forget": probe_rate}
        eligible = int(probe_rate <= self.cfg.max_probe_forget)
        key = (eligible, row["agreement"] if eligible else -probe_rate)
        if self.best is None or key >= self.best[0]:
            self.best = (key, copy.deepcopy(student.state_dict()))
        return row


@register_method("gkt", config=GKTConfig, needs=set(), scenarios={"class"},
                 weak_on={"class": "by design and measured: a fresh student learns the kept classes from generator "
                                   "samples alone (the official MNIST run ends at retain 94.8 % against the "
                                   "original's 99.35 %); on MNIST cnn class 3 its best cycle count, picked with the "
                                   "oracle, is 2.5-6.5 points off (bench/results/floor-mnist-cnn-5ep-gkt-s*.json)"})
def gkt(model: nn.Module, inputs: UnlearnInputs, cfg: GKTConfig, *, log=None) -> nn.Module:
    """Distil the original into a fresh student on generator samples gated to exclude the forget classes.

    A generator maximises student–teacher disagreement; samples whose forget-class probability under the
    original exceeds `threshold` are dropped (the band-pass gate), so the student never learns the
    forget classes. Student loss: KL at temperature T plus β_AT · attention transfer over every returned
    activation. Checkpoints every `checkpoint_every` cycles are chosen without real data (the official
    notebook selects on real retain/forget accuracy [QUIRK]; its scheduler steps on real validation loss).
    Touches no training data (needs nothing).
    """
    device = inputs.device
    forget = sorted(inputs.forget_classes or [])
    if not forget:
        raise ValueError("gkt needs the forget class ids (a class request)")
    gen = inputs.generator(53)
    teacher = model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = fresh_network(model, seed=inputs.seed * 7_919 + 1).to(device)
    torch.manual_seed(inputs.seed)
    generator = Generator(inputs.in_shape, cfg.z_dim, cfg.gen_width).to(device).train()

    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.gen_lr)
    opt_s = torch.optim.Adam(student.parameters(), lr=cfg.student_lr)
    plateau_g = torch.optim.lr_scheduler.ReduceLROnPlateau(opt_g, factor=0.5, patience=cfg.plateau_patience)
    plateau_s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt_s, factor=0.5, patience=cfg.plateau_patience)

    # Forget-class impressions (teacher-made, no data) for data-free leakage probing.
    probe_cfg = EMMNConfig(noise_per_class=cfg.probe_per_class, min_noise_l2=0.0)
    y_probe = torch.tensor(forget, device=device).repeat_interleave(cfg.probe_per_class)
    probes = optimise_noise(teacher, y_probe, inputs.in_shape, probe_cfg, gen, maximise=False)
    z_eval = [torch.randn(cfg.batch_size, cfg.z_dim, generator=gen).to(device) for _ in range(cfg.eval_batches)]
    selector = _Selector(teacher, probes, z_eval, forget, cfg)
    gen_ckpt = copy.deepcopy(generator.state_dict())

    def sample_gated(z: Tensor) -> Tensor:
        x = generator(z)
        with torch.no_grad():
            keep = _forget_mass(teacher(x), forget) <= cfg.threshold
        return x[keep]

    cycle, empty_run, empty_total = 0, 0, 0
    g_losses: list[Tensor] = []  # kept on the device: no host sync per step
    s_losses: list[Tensor] = []
    selector(student, generator, 0)
    while cycle < cfg.cycles:
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen).to(device)
        student.train(cfg.student_train_mode)
        for _ in range(cfg.n_generator_iter):  # adversarial step: maximise student–teacher disagreement
            x = sample_gated(z)
            if len(x) < 2:
                break
            loss_g = -divergence(student(x), teacher(x), cfg.temperature)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            nn.utils.clip_grad_norm_(generator.parameters(), cfg.grad_clip)
            opt_g.step()
            g_losses.append(loss_g.detach())
        with torch.no_grad():  # G is fixed during the student steps: one batch serves all of them
            x = sample_gated(z)
        if len(x) < 2:  # the gate removed the batch (BN needs 2 samples)
            empty_run, empty_total = empty_run + 1, empty_total + 1
            if empty_total > cfg.max_empty:
                raise RuntimeError(f"gkt: the generator produced only forget-class samples {empty_total} times")
            if empty_run > cfg.empty_patience:
                generator.load_state_dict(gen_ckpt)  # the official reset to the previous checkpoint
                empty_run = 0
            continue
        empty_run = 0
        with torch.no_grad():
            t_logits, t_acts = teacher(x, return_activations=True)
        for _ in range(cfg.n_student_iter):
            s_logits, s_acts = student(x, return_activations=True)
            loss_s = divergence(s_logits, t_logits, cfg.temperature)
            if cfg.beta_at > 0:
                loss_s = loss_s + cfg.beta_at * attention_loss(s_acts, t_acts)
            opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            opt_s.step()
            s_losses.append(loss_s.detach())
        cycle += 1
        if cycle % cfg.checkpoint_every == 0 or cycle == cfg.cycles:
            row = selector(student, generator, cycle)
            gen_ckpt = copy.deepcopy(generator.state_dict())
            mean_s = float(torch.stack(s_losses).mean()) if s_losses else 0.0
            mean_g = float(torch.stack(g_losses).mean()) if g_losses else 0.0
            plateau_s.step(mean_s)
            plateau_g.step(mean_g)
            s_losses, g_losses = [], []
            if log:
                log({"stage": "gkt", **row, "student_loss": mean_s, "generator_loss": mean_g})
    student.load_state_dict(selector.best[1])
    return student.eval()
