"""The joint sparse-dense objective with mutual self-KD (official `BICELoss`, `finetune_from_proj` mode).

In-batch B x B score matrices, rows = images, columns = texts:

    S_d = U_i U_t^T / tau        S_s = Z_i Z_t^T  (no temperature)        S_x = w1 S_d + w2 S_s

    InfoNCE(S)  = 1/2 [CE(S, diag) + CE(S^T, diag)]
    H(P, S)     = -mean_rows sum_j P_rj log_softmax(S)_rj          (soft-target CE = KL + const)
    KD(S)       = 1/2 [H(softmax_row(S_x), S) + H(softmax_row(S_x^T), S^T)]
    L           = (λ1 InfoNCE(S_d) + λ2 InfoNCE(S_s) + InfoNCE(S_x)) / 2
    L'          = (λ1 KD(S_d) + λ2 KD(S_s)) / 2         (the official code lets λ weight the KD terms too)
    loss        = 1/2 (L + L') + 1/2 [η_q(t) R(Z_t) + η_d(t) R(Z_i)]

R = L1 (official: mean_b sum_v |z_bv|) or FLOPS (sum_v (mean_b |z_bv|)^2), computed in fp32; the sparse
head and S_s are fp32 under autocast too (the dense branch follows train.amp).
Switches: ``detach_teacher`` (default true; the official code: false, gradients flow through the teacher);
``compat_official`` (the code's text->image teacher is softmax_row(S_x), not softmax_row(S_x^T)).
``method=contrastive`` drops L' (the paper's "without SKD" ablation): loss = L/2 + reg.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.losses import soft_target_cross_entropy
from .config import LossConfig


def info_nce(scores: Tensor) -> Tensor:
    """Symmetric InfoNCE over a square score matrix whose diagonal holds the positives."""
    target = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))


def teacher_probs(integrated: Tensor, compat_official: bool, detach: bool) -> tuple[Tensor, Tensor]:
    """(image->text, text->image) soft targets from the integrated score."""
    p_i2t = torch.softmax(integrated, dim=1)
    p_t2i = torch.softmax(integrated if compat_official else integrated.t(), dim=1)
    if detach:
        p_i2t, p_t2i = p_i2t.detach(), p_t2i.detach()
    return p_i2t, p_t2i


def self_kd(student: Tensor, p_i2t: Tensor, p_t2i: Tensor) -> Tensor:
    """1/2 [H(P_i2t, S) + H(P_t2i, S^T)] (row-mean soft-target cross-entropy)."""
    return 0.5 * (soft_target_cross_entropy(student, p_i2t) + soft_target_cross_entropy(student.t(), p_t2i))


def l1_reg(z: Tensor) -> Tensor:
    return z.float().abs().sum(dim=-1).mean()


def flops_reg(z: Tensor) -> Tensor:
    return (z.float().abs().mean(dim=0) ** 2).sum()


def at_least_fp32(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def score_matrices(out: dict[str, Tensor], w_dense: float, w_sparse: float) -> tuple[Tensor, Tensor, Tensor]:
    dense = out["u_i"] @ out["u_t"].t() / out["temp"]
    # the sparse score in fp32 even under autocast (bf16: up to ~0.1 logit error on un-tempered scores)
    with torch.autocast(out["z_i"].device.type, enabled=False):
        sparse = at_least_fp32(out["z_i"]) @ at_least_fp32(out["z_t"]).t()
    return dense, sparse, w_dense * dense + w_sparse * sparse


def retrieval_objective(out: dict[str, Tensor], cfg: LossConfig, eta_q: float, eta_d: float) -> tuple[Tensor, dict]:
    dense, sparse, integrated = score_matrices(out, cfg.w_dense, cfg.w_sparse)
    l_dense, l_sparse, l_inter = info_nce(dense), info_nce(sparse), info_nce(integrated)
    contrastive = (cfg.lambda_dense * l_dense + cfg.lambda_sparse * l_sparse + l_inter) / 2
    reg_fn = l1_reg if cfg.reg == "l1" else flops_reg
    reg_q, reg_d = reg_fn(out["z_t"]), reg_fn(out["z_i"])
    reg = 0.5 * (eta_q * reg_q + eta_d * reg_d)
    logs = {
        "loss/dense": l_dense,
        "loss/sparse": l_sparse,
        "loss/integrated": l_inter,
        "loss/reg_q": reg_q,
        "loss/reg_d": reg_d,
        "weight/eta_q": eta_q,
        "weight/eta_d": eta_d,
        "temperature": out["temp"],
    }
    if cfg.method == "skd":
        p_i2t, p_t2i = teacher_probs(integrated, cfg.compat_official, cfg.detach_teacher)
        kd_dense, kd_sparse = self_kd(dense, p_i2t, p_t2i), self_kd(sparse, p_i2t, p_t2i)
        distill = (cfg.lambda_dense * kd_dense + cfg.lambda_sparse * kd_sparse) / 2
        logs.update({"loss/kd_dense": kd_dense, "loss/kd_sparse": kd_sparse})
        loss = 0.5 * (contrastive + distill) + reg
    else:
        loss = 0.5 * contrastive + reg
    return loss, logs
