"""The Siamese self-KD objective (form: ours, recipes/sleep/README.md provenance table; the paper's is not public).

    skd: L = 1/2 [CE(y, p1) + CE(y, p2)] + w · T² · D(p1_T, p2_T)
    ce:  L = CE(y, p)                                            (the --baseline)

p1, p2 = the shared-weight network on two views of the same windows; every SCORED epoch of
every window is a position (at most B·L). Unscored epochs inside a window (label -1: ?,
movement, SHHS 6/9) are context only: no CE and no KD term (masked). D:
    sym_kl       1/2 [KL(p1 || p2) + KL(p2 || p1)], gradients into both branches
    kl_stopgrad  KL(sg(p2) || p1): branch 2 is a detached teacher
    js           Jensen-Shannon divergence, gradients into both branches
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.losses import kd_kl_loss
from .config import KDConfig


def branch_divergence(logits1: torch.Tensor, logits2: torch.Tensor, kd: KDConfig) -> torch.Tensor:
    """Mean over positions of D(p1_T, p2_T)·T² for (N, K) logits."""
    common = dict(temperature=kd.temperature, t2_scale=True, reduction="mean")
    if kd.divergence == "sym_kl":
        return 0.5 * kd_kl_loss(logits1, logits2, direction="symmetric", detach_teacher=False, **common)
    if kd.divergence == "kl_stopgrad":
        return kd_kl_loss(logits1, logits2, direction="forward", detach_teacher=True, **common)
    return kd_kl_loss(logits1, logits2, direction="js", detach_teacher=False, **common)


def siamese_self_kd_loss(
    logits1: torch.Tensor, logits2: torch.Tensor | None, labels: torch.Tensor, kd: KDConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """(B, L, K) logits of the two branches (logits2 None for kd.method=ce), (B, L) labels; every
    term is the mean over the scored positions (labels >= 0)."""
    k = logits1.shape[-1]
    y = labels.reshape(-1)
    scored = y >= 0
    l1, y = logits1.float().reshape(-1, k)[scored], y[scored]
    if kd.method == "ce" or logits2 is None:
        ce = F.cross_entropy(l1, y)
        return ce, {"loss/ce": ce}
    l2 = logits2.float().reshape(-1, k)[scored]
    ce = 0.5 * (F.cross_entropy(l1, y) + F.cross_entropy(l2, y))
    div = branch_divergence(l1, l2, kd)
    return ce + kd.weight * div, {"loss/ce": ce, "loss/kd": div, "weight/kd": kd.weight}
