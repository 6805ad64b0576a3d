"""Distillation loss primitives: KL in four directions, soft-target CE, label smoothing.

Every function treats the LAST dim as the class dim; all other dims are "positions"
(rows, frames, tokens). Masks are bool tensors of the leading shape, True = the position counts.

Reductions (shared by all three losses; ``sequence_mean`` only for ``kd_kl_loss`` and
``soft_target_cross_entropy``):

    none           per-position loss, leading shape, masked positions are 0
    sum            sum over valid positions
    mean           sum / n_valid                       (0 when nothing is valid)
    batchmean      sum / size(dim 0)                   (torch's KLDivLoss 'batchmean')
    element_mean   sum / (n_valid * num_classes)       (F.kl_div's default 'mean')
    sequence_mean  (B, T, V) inputs: mean over each sequence's valid frames, then sum / B.
                   A sequence with no valid frame adds 0. Each sequence contributes
                   independently, so the value averages exactly across DDP ranks with
                   equal per-rank batch sizes.

The KL conventions of the recipes differ (each recipe README says which it uses); pick them explicitly, e.g.
xqa = forward KL, T=2, t2_scale, 'batchmean'; asr-ctc = T=1, no T², 'element_mean'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DIRECTIONS = ("forward", "reverse", "symmetric", "js")
REDUCTIONS = ("none", "sum", "mean", "batchmean", "element_mean", "sequence_mean")


def standardize_logits(z: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score over the last dim: (z - mean(z)) / (eps + std(z)).

    Logit standardisation of Sun et al. (CVPR 2024). ``std`` is torch's default (Bessel-corrected,
    divisor K-1), as in the authors' reference code.
    """
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True)
    return (z - mean) / (eps + std)


def _check_mask(mask: Tensor | None, leading_shape: torch.Size) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = position counts), got dtype {mask.dtype}")
    if mask.shape != leading_shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the logits' leading shape {tuple(leading_shape)} "
            "(all dims but the last)"
        )


def _fill_masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the masked positions of a (..., K) tensor so padding garbage (inf, nan) cannot leak
    into the value or the gradient; masked_fill passes zero gradient to those entries."""
    return x if mask is None else x.masked_fill(~mask.unsqueeze(-1), 0.0)


def _reduce(per_position: Tensor, mask: Tensor | None, reduction: str, num_classes: int) -> Tensor:
    """Reduce a per-position loss (leading shape) according to a validated ``reduction`` (module doc)."""
    if mask is not None:
        per_position = per_position.masked_fill(~mask, 0.0)
    if reduction == "none":
        return per_position
    if reduction == "sequence_mean":
        if per_position.dim() != 2:
            raise ValueError(
                f"reduction 'sequence_mean' needs logits of shape (B, T, V); got {per_position.dim() + 1} dims"
            )
        frames = per_position.shape[1] if mask is None else mask.sum(dim=1).clamp(min=1)
        return (per_position.sum(dim=1) / frames).mean()
    total = per_position.sum()
    # a tensor count avoids a host sync on GPU; clamp so an all-masked batch gives 0, not nan
    n_valid = max(per_position.numel(), 1) if mask is None else mask.sum().clamp(min=1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / n_valid
    if reduction == "batchmean":
        if per_position.dim() == 0:
            raise ValueError("reduction 'batchmean' needs logits with a batch dim (at least 2 dims)")
        return total / per_position.shape[0]
    return total / (n_valid * num_classes)  # element_mean


def _check_reduction(reduction: str, valid: tuple[str, ...]) -> None:
    if reduction not in valid:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(valid)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def kd_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    t2_scale: bool = True,
    direction: str = "forward",
    mask: Tensor | None = None,
    reduction: str = "batchmean",
    detach_teacher: bool = True,
    standardize: bool = False,
) -> Tensor:
    """KL-family distillation loss between two categorical distributions over the last dim.

    With s = student_logits, t = teacher_logits (optionally standardised first), T = temperature:

        p = softmax(t / T)   (teacher)        q = softmax(s / T)   (student)

        forward    KL(p || q) = sum_k p_k (log p_k - log q_k)
        reverse    KL(q || p)
        symmetric  KL(p || q) + KL(q || p)
        js         JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q) / 2   (nats, <= ln 2)

    The per-position value is multiplied by T² when ``t2_scale`` (Hinton et al.: keeps gradient
    magnitudes comparable across temperatures), then reduced (module doc). ``detach_teacher``
    stops the gradient into ``teacher_logits``; turn it off only for a trainable teacher.

    Args:
        student_logits: (..., K).
        teacher_logits: (..., K), same shape.
        mask: bool, shape (...), True = position counts; masked positions may hold any value.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} "
            "must have the same shape"
        )
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    _check_reduction(reduction, REDUCTIONS)
    _check_temperature(temperature)
    _check_mask(mask, student_logits.shape[:-1])

    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    s = _fill_masked(student_logits, mask)
    t = _fill_masked(teacher_logits, mask)
    if standardize:
        s, t = standardize_logits(s), standardize_logits(t)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)

    # F.kl_div(input=log a, target=log b, log_target=True) = sum b (log b - log a) = KL(b || a)
    def kl(log_target: Tensor, log_input: Tensor) -> Tensor:
        return F.kl_div(log_input, log_target, reduction="none", log_target=True).sum(dim=-1)

    if direction == "forward":
        per_position = kl(log_p, log_q)
    elif direction == "reverse":
        per_position = kl(log_q, log_p)
    elif direction == "symmetric":
        per_position = kl(log_p, log_q) + kl(log_q, log_p)
    else:
        log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
        per_position = 0.5 * kl(log_p, log_m) + 0.5 * kl(log_q, log_m)

    if t2_scale:
        per_position = per_position * temperature**2
    return _reduce(per_position, mask, reduction, student_logits.shape[-1])


def soft_target_cross_entropy(
    logits: Tensor,
    target_probs: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy against soft targets: per position  -sum_k q_k log softmax(z / T)_k.

    Equals KL(q || softmax(z/T)) + H(q), so it has the same gradient in z as forward KL.
    ``target_probs`` is NOT detached here: the retrieval recipe's official code lets gradient
    flow into its in-batch targets, so the caller decides (e.g. with ``DetachedPrediction``).

    Args:
        logits: (..., K).
        target_probs: (..., K), rows summing to 1.
        mask: bool, shape (...), True = position counts.
        reduction: any of the module's reductions; 'mean' = mean over valid positions.
    """
    if logits.shape != target_probs.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target_probs {tuple(target_probs.shape)} must have the same shape"
        )
    _check_reduction(reduction, REDUCTIONS)
    _check_temperature(temperature)
    _check_mask(mask, logits.shape[:-1])
    log_q = F.log_softmax(_fill_masked(logits, mask) / temperature, dim=-1)
    per_position = -(_fill_masked(target_probs, mask) * log_q).sum(dim=-1)
    return _reduce(per_position, mask, reduction, logits.shape[-1])


def label_smoothing_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    smoothing: float,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy with uniform label smoothing, identical to F.cross_entropy(label_smoothing=eps).

    Target q = (1 - eps) * onehot(y) + eps / K over all K classes, so per position

        loss = (1 - eps) * (-log p_y) + eps * mean_k(-log p_k),   p = softmax(z).

    Positions with ``targets == ignore_index`` count as masked ('mean' divides by the number of
    the others, as torch does).

    Args:
        logits: (..., K), classes on the LAST dim (torch's own function wants them on dim 1).
        targets: (...) integer class indices.
        reduction: 'none' | 'sum' | 'mean'.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal the logits' leading shape {tuple(logits.shape[:-1])}"
        )
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    _check_reduction(reduction, ("none", "sum", "mean"))
    valid = targets != ignore_index
    log_p = F.log_softmax(_fill_masked(logits, valid), dim=-1)
    nll = -log_p.gather(-1, targets.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
    per_position = (1.0 - smoothing) * nll + smoothing * (-log_p.mean(dim=-1))
    return _reduce(per_position, valid, reduction, logits.shape[-1])
