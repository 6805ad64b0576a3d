"""The losses of the paper (official code ``src/run_squad_w_distillation.py`` and ``src/utils.py`` at c6b7f10).

    L = alpha_ce * L_CE + c * L_KL

- L_CE = 1/2 [CE(z_start, y_start) + CE(z_end, y_end)], Hugging Face's ``BertForQuestionAnswering``
  loss: positions clamped to [0, L], L being the ignore index.
- L_KL = 1/2 [KL_start + KL_end], each T^2 * KLDivLoss(batchmean)(log_softmax(z_s / T), softmax(z_t / T)):
  forward KL(teacher || student) summed over positions, averaged over the batch (``fw``); ``rv`` is
  KL(student || teacher), ``sym`` their sum.
- c = 1 (SKD) or the mAP@k coefficient (``map_at_k_coefficient``), a number without gradient.

Masking (ours, on by default; the official code has none): the softmax of both KL terms, and the
teacher ranking of the coefficient, run over the positions of ``kd_mask`` only (context tokens and
[CLS]); question, separator and padding positions get a large negative logit, so they carry no
probability and no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.losses import kd_kl_loss

KL_DIRECTIONS = {"fw": "forward", "rv": "reverse", "sym": "symmetric"}
MASKED_LOGIT = -1.0e4  # exp(-1e4 / T) is exactly 0 in fp32/bf16 for any T <= 100; finite, so KL terms stay 0, not nan


def qa_cross_entropy(
    start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor
) -> Tensor:
    """Hugging Face's span loss: mean over the batch of each CE, then the average of the two."""
    ignored = start_logits.size(1)
    start = start_positions.clamp(0, ignored)
    end = end_positions.clamp(0, ignored)
    return 0.5 * (
        F.cross_entropy(start_logits, start, ignore_index=ignored)
        + F.cross_entropy(end_logits, end, ignore_index=ignored)
    )


def mask_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    return logits if mask is None else logits.masked_fill(~mask, MASKED_LOGIT)


def qa_kd_loss(
    student_start: Tensor,
    student_end: Tensor,
    teacher_start: Tensor,
    teacher_end: Tensor,
    temperature: float,
    direction: str = "fw",
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(L_KL, KL_start, KL_end) with T^2 scaling and 'batchmean' (module doc)."""
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"unknown KL direction {direction!r}; valid: {', '.join(KL_DIRECTIONS)}")
    kw = {"temperature": temperature, "t2_scale": True, "direction": KL_DIRECTIONS[direction], "reduction": "batchmean"}
    kl_start = kd_kl_loss(mask_logits(student_start, mask), mask_logits(teacher_start, mask), **kw)
    kl_end = kd_kl_loss(mask_logits(student_end, mask), mask_logits(teacher_end, mask), **kw)
    return 0.5 * (kl_start + kl_end), kl_start, kl_end


@torch.no_grad()
def average_precision_at_k(
    teacher_logits: Tensor, gold: Tensor, k: int = 10, window: int = 5, mask: Tensor | None = None
) -> Tensor:
    """Per example: 1 / (rank of the teacher's first top-k position inside the gold window), 0 if none.

    The window is the official ``range(gold - window, gold + window)``: ``window`` positions before
    the gold one, the gold one and ``window - 1`` after it (asymmetric). ``window = 0`` is the
    official MRR variant: the gold position only. The official code scores the relevance list with
    Kaggle's ``apk(actual=[1], predicted=flags)``, in which only the first hit counts, so this is a
    windowed reciprocal rank (recipes/xqa/README.md). Masked positions never count as hits.
    """
    logits = mask_logits(teacher_logits, mask).float()
    k = min(k, logits.size(1))
    top = logits.topk(k, dim=1).indices  # (B, k); softmax(z/T) ranks like z
    gold = gold.unsqueeze(1)
    if window > 0:
        hit = (top >= gold - window) & (top < gold + window)
    else:
        hit = top == gold
    if mask is not None:
        hit &= mask.gather(1, top)
    first = hit.float().argmax(dim=1)
    return torch.where(hit.any(dim=1), 1.0 / (first + 1).float(), torch.zeros_like(first, dtype=torch.float))


@torch.no_grad()
def map_at_k_coefficient(
    teacher_start: Tensor,
    teacher_end: Tensor,
    start_positions: Tensor,
    end_positions: Tensor,
    k: int = 10,
    window: int = 5,
    mask: Tensor | None = None,
) -> Tensor:
    """c = 1/2 (mean_b AP_b^start + mean_b AP_b^end), in [0, 1], per micro-batch (official granularity)."""
    ap_start = average_precision_at_k(teacher_start, start_positions, k, window, mask)
    ap_end = average_precision_at_k(teacher_end, end_positions, k, window, mask)
    return 0.5 * (ap_start.mean() + ap_end.mean())
