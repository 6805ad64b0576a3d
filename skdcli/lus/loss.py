"""The DINO self-distillation loss, its centre, the schedules, and the KNN classifier.

DINO (Caron et al. 2021; official MeDiVLAD Medino/dino_utils, recipes/lus/README.md):

    P_s^v = softmax(g_s(x_v) / tau_s)                      every crop v (2 global + n local)
    P_t^u = softmax((g_t(x_u) - c) / tau_t), detached      the 2 global crops u
    L = 1/n_pairs * sum_u sum_{v != u} mean_batch H(P_t^u, P_s^v),  n_pairs = 2 (n_crops - 1)
    c <- m c + (1 - m) * mean(teacher outputs)             after the loss, m = 0.9
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..engine.teachers import TeacherSignal
from .config import DinoConfig


def dino_loss(
    student: Tensor, teacher: Tensor, center: Tensor, student_temp: float, teacher_temp: float, n_global: int = 2
) -> tuple[Tensor, Tensor]:
    """(loss, teacher probabilities).

    ``student``: (n_crops * B, K) logits ordered [crop 1 | crop 2 | ...]; ``teacher``: (n_global * B, K);
    ``center``: (K,) or (B, K) (the per-position quirk), broadcast over the global crops."""
    n_crops = student.shape[0] // (teacher.shape[0] // n_global)
    batch = teacher.shape[0] // n_global
    t = teacher.view(n_global, batch, -1)
    q = F.softmax((t - center) / teacher_temp, dim=-1).detach()
    log_p = F.log_softmax(student / student_temp, dim=-1).view(n_crops, batch, -1)
    total, pairs = student.new_zeros(()), 0
    for iq in range(n_global):
        for v in range(n_crops):
            if v == iq:  # a crop is never compared with itself
                continue
            total = total + (-(q[iq] * log_p[v]).sum(-1)).mean()
            pairs += 1
    return total / max(pairs, 1), q


@torch.no_grad()
def center_target(teacher: Tensor, n_global: int, mode: str) -> Tensor:
    """The batch mean the centre moves toward: over all n_global * B teacher outputs (``all``, DINO),
    or over the crop axis only (``per_position``: the official-code quirk, one centre per batch slot)."""
    t = teacher.detach().float().view(n_global, teacher.shape[0] // n_global, -1)
    target = t.mean(0) if mode == "per_position" else t.mean((0, 1))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(target)
        target /= dist.get_world_size()
    return target


class DinoCentre(TeacherSignal):
    """The running centre c of the teacher outputs; its state is checkpointed with the run."""

    def __init__(self, out_dim: int, momentum: float, mode: str, device: torch.device | str = "cpu"):
        self.momentum, self.mode = momentum, mode
        self.center = torch.zeros(1, out_dim, device=device)

    @torch.no_grad()
    def update(self, teacher: Tensor, n_global: int = 2) -> None:
        target = center_target(teacher, n_global, self.mode)
        if self.mode == "per_position" and self.center.shape != target.shape:
            # the quirk's centre takes the batch-slot shape at the first update (zeros broadcast until then);
            # a last batch of another size would not fit, as in the official code
            self.center = self.center.expand_as(target).clone()
        self.center = self.center * self.momentum + target * (1 - self.momentum)

    def value(self) -> Tensor:
        return self.center if self.mode == "per_position" else self.center[0]

    def state_dict(self) -> dict[str, Any]:
        return {"center": self.center}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.center = state["center"].to(self.center.device).clone()


# -- schedules, all pure functions of the optimizer step (exact resume) ------------------------------------------------
def cosine_value(start: float, end: float, step: int, total: int) -> float:
    """DINO's cosine_scheduler without warm-up: end + (start - end) (1 + cos(pi step / total)) / 2."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def teacher_temperature(cfg: DinoConfig, step: int) -> float:
    """Linear warm-up warmup_teacher_temp -> teacher_temp over the first epochs, per epoch as the
    official np.linspace(warmup, final, warmup_epochs) indexed by epoch; then constant."""
    epoch = step // cfg.epoch_steps
    w = cfg.warmup_teacher_temp_epochs
    if epoch >= w:
        return cfg.teacher_temp
    if w == 1:
        return cfg.warmup_teacher_temp
    return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * epoch / (w - 1)


def teacher_momentum(cfg: DinoConfig, step: int, total: int) -> float:
    return cosine_value(cfg.momentum_teacher, 1.0, step, total)


def weight_decay_at(start: float, cfg: DinoConfig, step: int, total: int) -> float:
    return cosine_value(start, cfg.weight_decay_end, step, total)


def clip_per_parameter(params, clip: float) -> None:
    """The official clip_gradients: each parameter's gradient scaled to norm <= clip on its own."""
    for p in params:
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            coef = clip / (norm + 1e-6)
            p.grad.mul_(torch.clamp(coef, max=1.0))


# -- KNN (DINO's knn_classifier) --------------------------------------------------------------------------------------
@torch.no_grad()
def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k_max: int,
    temperature: float,
    num_classes: int,
    exclude: Tensor | None = None,
) -> Tensor:
    """Class votes for every k = 1..k_max: (k_max, N_test, C). Cosine similarity, weights exp(sim / T).
    ``exclude`` (N_test, N_train) bool: pairs that may not be neighbours (same patient, for model selection)."""
    train = F.normalize(train_feats.float(), dim=-1)
    test = F.normalize(test_feats.float(), dim=-1)
    sim = test @ train.T
    if exclude is not None:
        sim = sim.masked_fill(exclude, float("-inf"))
    k = min(k_max, train.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp().nan_to_num(0.0)  # exp(-inf) -> 0 when fewer neighbours exist
    onehot = F.one_hot(train_labels[top_idx], num_classes).float() * weights.unsqueeze(-1)
    votes = onehot.cumsum(1).permute(1, 0, 2)  # (k, N_test, C): votes of the first k neighbours
    if k < k_max:
        votes = torch.cat([votes, votes[-1:].expand(k_max - k, -1, -1)])
    return votes
