"""The losses of DRRNet-SKD (OUR reading: recipes/sar/README.md) and of each self-KD baseline (from its own paper and,
where it exists, its official code; recipes/sar/README.md §5 has the provenance of every constant).

Every function returns (loss to backpropagate, named terms to log). Logits are (B, K).
The KL primitive is the engine's ``kd_kl_loss``: forward KL(teacher || student) on softmax(z / T),
times T² (Hinton et al.), reduced as each official implementation does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.losses import kd_kl_loss, soft_target_cross_entropy


def drrnet_loss(
    logits: Tensor,
    y: Tensor,
    offline: Tensor | None,
    online: Tensor | None,
    online_mask: Tensor | None,
    w_off: float,
    w_on: float,
    temperature: float,
    weight: float,
) -> tuple[Tensor, dict]:
    """L = CE + lambda T² [w_off KL(p_off || p_s) + w_on KL(p_on || p_s)]   (OURS: recipes/sar/README.md).

    A teacher that does not exist yet (no previous generation, no last iteration) adds 0.
    ``online_mask`` (B,) marks the rows the online teacher covers (DLB-style: the chips that were
    in the last iteration); each KL is the mean over the rows it covers.
    """
    ce = F.cross_entropy(logits, y)
    zero = logits.new_zeros(())
    kl_off = kd_kl_loss(logits, offline, temperature, reduction="mean") if offline is not None else zero
    if online is not None and (online_mask is None or bool(online_mask.any())):
        kl_on = kd_kl_loss(logits, online, temperature, mask=online_mask, reduction="mean")
    else:
        kl_on = zero
    loss = ce + weight * (w_off * kl_off + w_on * kl_on)
    return loss, {"loss/ce": ce, "loss/kl_offline": kl_off, "loss/kl_online": kl_on}


def cs_kd_loss(
    logits: Tensor, pair_logits: Tensor, y: Tensor, temperature: float, weight: float
) -> tuple[Tensor, dict]:
    """CS-KD (Yun et al., CVPR 2020; alinlab/cs-kd train.py): CE on the anchors +
    lambda * T² * KL(softmax(z(x')/T) || softmax(z(x)/T)), summed over classes and divided by the
    batch size; x' another chip of the same class, its prediction without gradient."""
    ce = F.cross_entropy(logits, y)
    cls = kd_kl_loss(logits, pair_logits.detach(), temperature, reduction="batchmean")
    return ce + weight * cls, {"loss/ce": ce, "loss/cls": cls}


def ps_kd_loss(
    logits: Tensor, y: Tensor, past_probs: Tensor, past_filled: Tensor, alpha_t: float
) -> tuple[Tensor, dict]:
    """PS-KD (Kim et al., ICCV 2021; lgcnsai/PS-KD-Pytorch): soft-target CE against
    (1 - alpha_t) onehot(y) + alpha_t p_{e-1}(x), the chip's prediction from the previous epoch.
    A chip never predicted yet uses its one-hot label (the official code fills the memory with one-hot
    targets in epoch 0). The loss is the batch mean of -sum_k q_k log p_k."""
    onehot = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    past = torch.where(past_filled[:, None], past_probs.to(logits.dtype), onehot)
    soft = (1.0 - alpha_t) * onehot + alpha_t * past
    loss = soft_target_cross_entropy(logits, soft, reduction="mean")
    return loss, {"loss/soft_ce": loss}


def _kl_reduce(log_p_teacher: Tensor, log_q_student: Tensor, reduction: str) -> Tensor:
    per_elem = F.kl_div(log_q_student, log_p_teacher, reduction="none", log_target=True)
    return per_elem.mean() if reduction == "element_mean" else per_elem.sum() / per_elem.shape[0]


def tf_kd_reg_loss(
    logits: Tensor,
    y: Tensor,
    alpha: float,
    temperature: float,
    multiplier: float,
    correct_prob: float,
    reduction: str = "element_mean",
) -> tuple[Tensor, dict]:
    """Tf-KD_reg (Yuan et al., CVPR 2020; official my_loss_function.loss_kd_regularization):
    virtual teacher p_d = a on the true class, (1-a)/(K-1) elsewhere; target softmax(p_d / T) (the
    temperature is applied to the probabilities, as the official code does); student log_softmax(z) at T=1;
    L = (1-alpha) CE + alpha * multiplier * KL, the KL averaged over all B*K elements (nn.KLDivLoss())."""
    k = logits.shape[-1]
    virtual = torch.full_like(logits, (1.0 - correct_prob) / max(k - 1, 1))
    virtual.scatter_(1, y[:, None], correct_prob)
    ce = F.cross_entropy(logits, y)
    kl = _kl_reduce(F.log_softmax(virtual / temperature, -1), F.log_softmax(logits, -1), reduction) * multiplier
    return (1.0 - alpha) * ce + alpha * kl, {"loss/ce": ce, "loss/kl_virtual": kl}


def tf_kd_self_loss(
    logits: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    alpha: float,
    temperature: float,
    multiplier: float,
    reduction: str = "element_mean",
) -> tuple[Tensor, dict]:
    """Tf-KD_self (official loss_kd_self): a trained copy of the same network teaches;
    L = (1-alpha) CE + alpha * T² * multiplier * KL(softmax(t/T) || softmax(z/T)), KL averaged as above."""
    ce = F.cross_entropy(logits, y)
    t = teacher_logits.detach()
    kl = _kl_reduce(F.log_softmax(t / temperature, -1), F.log_softmax(logits / temperature, -1), reduction)
    kl = kl * temperature**2 * multiplier
    return (1.0 - alpha) * ce + alpha * kl, {"loss/ce": ce, "loss/kl_teacher": kl}


def byot_loss(
    exit_feats: list[Tensor],
    exit_logits: list[Tensor],
    deep_feat: Tensor,
    deep_logits: Tensor,
    y: Tensor,
    alpha: float,
    temperature: float,
    feature_weight: float,
) -> tuple[Tensor, dict]:
    """BYOT (Zhang et al., ICCV 2019): the deepest classifier learns from the labels; every shallow exit i
    from (1-alpha) CE + alpha T² KL(q_deep^T || q_i^T) (batch mean) + lambda ||f_i - f_deep||² (squared
    L2 over the feature, batch mean); the deepest logits and feature are detached (the teacher)."""
    ce_deep = F.cross_entropy(deep_logits, y)
    loss = ce_deep
    terms: dict = {"loss/ce_deep": ce_deep}
    t_logits, t_feat = deep_logits.detach(), deep_feat.detach()
    for i, (f, z) in enumerate(zip(exit_feats, exit_logits), 1):
        ce = F.cross_entropy(z, y)
        kl = kd_kl_loss(z, t_logits, temperature, reduction="batchmean")
        l2 = (f - t_feat).pow(2).sum(dim=1).mean()
        loss = loss + (1.0 - alpha) * ce + alpha * kl + feature_weight * l2
        terms.update({f"loss/ce_exit{i}": ce, f"loss/kl_exit{i}": kl, f"loss/l2_exit{i}": l2})
    return loss, terms


def dlb_loss(
    logits: Tensor, y: Tensor, last_logits: Tensor | None, last_mask: Tensor | None, temperature: float, weight: float
) -> tuple[Tensor, dict]:
    """DLB (Shen et al., CVPR 2022): CE on the whole batch + alpha T² KL(p_{t-1}^T || p_t^T) on the chips
    that were also in the last iteration (half of each batch), whose softened predictions from then
    are the targets; mean over those chips."""
    ce = F.cross_entropy(logits, y)
    if last_logits is None or last_mask is None or not bool(last_mask.any()):
        kl = logits.new_zeros(())
    else:
        kl = kd_kl_loss(logits, last_logits, temperature, mask=last_mask, reduction="mean")
    return ce + weight * kl, {"loss/ce": ce, "loss/kl_last": kl}


def zipf_ranks(scores: Tensor) -> Tensor:
    """1-based descending ranks with ties sharing the smallest rank ("min", as the official rank_data):
    rank_k = 1 + #{j: s_j > s_k}."""
    return 1 + (scores[:, None, :] > scores[:, :, None]).sum(dim=2)


def dense_votes(dense_logits: Tensor) -> Tensor:
    """(B, P, K) per-position logits -> (B, K) counts of positions whose argmax is each class."""
    k = dense_logits.shape[-1]
    return F.one_hot(dense_logits.argmax(-1), k).sum(dim=1).to(dense_logits.dtype)


def zipf_ls_loss(
    logits: Tensor, y: Tensor, rank_scores: Tensor, weight: float, power: float = 1.0, loss_mask: bool = False
) -> tuple[Tensor, dict]:
    """Zipf's LS (Liang et al., ECCV 2022; megvii-research/zipfls loss): over the NON-target classes,
    target d_k ∝ rank_k^-power (ranks of ``rank_scores``: the logits, or the dense votes), student =
    softmax of the non-target logits; KL(d || student) per chip, batch mean (or mean over the correctly
    classified chips with ``loss_mask``). L = CE + weight * that KL."""
    b, k = logits.shape
    ce = F.cross_entropy(logits, y)
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, y[:, None], False)
    ranks = zipf_ranks(rank_scores.detach()).to(logits.dtype)
    d = (1.0 / ranks) ** power
    d = d[keep].view(b, k - 1)
    d = d / d.sum(dim=1, keepdim=True)
    log_q = F.log_softmax(logits[keep].view(b, k - 1), dim=1)
    per_chip = (d * (d.log() - log_q)).sum(dim=1)
    if loss_mask:
        correct = (logits.argmax(1) == y).to(logits.dtype)
        zipf = (per_chip * correct).sum() / correct.sum() if bool(correct.any()) else per_chip.sum() * 0.0
    else:
        zipf = per_chip.mean()
    return ce + weight * zipf, {"loss/ce": ce, "loss/zipf": zipf}
