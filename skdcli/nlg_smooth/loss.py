"""The training objectives of nlg-smooth, per target token, padding masked.

ALS-SK (Lee, Cheung & Zhang, EMNLP 2022; equations reconstructed, see the recipe README §3):

    p   = softmax(z)                     the model in training
    p~  = softmax(z_prior / T)           the frozen best-so-far checkpoint (self-knowledge prior)
    a_i = lam * g(H(sg(p_i)))            smoothing weight per token, from the detached entropy
    q_i = (1 - a_i) e_y + a_i p~_i
    L   = mean_i  -sum_k q_ik log p_ik = mean_i (1 - a_i) CE_i + a_i CE(p~_i, p_i)

With T != 1 the prior term is CE(p~_i, softmax(z/T)) * T^2 (Hinton's gradient scaling).
g maps the entropy to [0, 1]: ``norm_entropy`` H/log V, ``one_minus_norm_entropy`` 1 - H/log V,
``batch_minmax`` (H - min)/(max - min) over the batch's real tokens, ``constant`` 1.
Baselines (the comparison points of the same group's Hard-Gate KD paper, EMNLP 2022; see the README):

    ce          CE
    ls          q = (1 - eps) e_y + eps u,  u uniform over V                     (Szegedy et al. 2016)
    ls_unigram  q = (1 - eps) e_y + eps u,  u = the train targets' unigram distribution (Pereyra et al. 2017)
    confpen     CE - beta H(p)                                                   (Pereyra et al. 2017)
    tfkd        TF-KD_reg (Yuan et al., CVPR 2020), its official code's form (loss_kd_regularization,
                yuanli2333/Teacher-free-Knowledge-Distillation@880a74e, my_loss_function.py):
                (1 - a) CE + a m KL(p^d_T || p), p^d = c on y and (1 - c)/(V - 1) elsewhere,
                p^d_T = softmax(p^d / T) (the *probabilities* divided by T, as the code does);
                the code's KLDivLoss averages over batch x classes and multiplies by ``multiplier``,
                so our per-token, vocabulary-summed KL takes m = multiplier / classes
    pskd        PS-KD (Kim et al., ICCV 2021): q = (1 - a_t) e_y + a_t p_{t-1},
                a_t = alpha_T * t / T_epochs (t = the 1-based epoch, the official code's
                alpha_T * (epoch + 1) / end_epoch), p_{t-1} = the model as it was at the end of the
                previous epoch; epoch 1 has no teacher and trains plain CE (the official code's
                first-epoch targets are the one-hot labels)

Identities the tests check: a = 0 gives CE exactly; a uniform prior with g = constant gives
label smoothing exactly; q is a distribution; padded positions contribute nothing.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.losses import label_smoothing_cross_entropy, soft_target_cross_entropy
from ..text.tokenizer import PAD_ID


def token_entropy(log_probs: Tensor) -> Tensor:
    """H(p) = -sum_k p_k log p_k over the last dim (nats)."""
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def smoothing_weight(logits: Tensor, mask: Tensor, lam: float, fn: str, log_probs: Tensor | None = None) -> Tensor:
    """a_i = lam * g(H(p_i)) per position, computed on detached logits (no gradient), 0 on padding.

    ``log_probs`` (= log_softmax(logits), optional) saves recomputing it when the caller has it.
    """
    with torch.no_grad():
        log_p = F.log_softmax(logits.detach().float(), dim=-1) if log_probs is None else log_probs.detach()
        h = token_entropy(log_p)
        if fn == "norm_entropy":
            g = h / math.log(logits.shape[-1])
        elif fn == "one_minus_norm_entropy":
            g = 1.0 - h / math.log(logits.shape[-1])
        elif fn == "batch_minmax":
            big = torch.finfo(h.dtype).max
            lo, hi = h.masked_fill(~mask, big).min(), h.masked_fill(~mask, -big).max()
            g = (h - lo) / (hi - lo).clamp(min=1e-8)
        elif fn == "constant":
            g = torch.ones_like(h)
        else:
            raise ValueError(f"unknown alpha_fn {fn!r}")
        return (lam * g.clamp(0.0, 1.0)).masked_fill(~mask, 0.0)


def soft_targets(targets: Tensor, alpha: Tensor, prior_probs: Tensor) -> Tensor:
    """q = (1 - a) e_y + a p~ as an explicit (..., V) tensor (for tests and inspection; the loss
    uses the equivalent two-term form and never builds it)."""
    onehot = F.one_hot(targets.clamp(min=0), prior_probs.shape[-1]).to(prior_probs.dtype)
    a = alpha.unsqueeze(-1).to(prior_probs.dtype)
    return (1.0 - a) * onehot + a * prior_probs


def _masked_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    return per_token.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)


def als_sk_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: Tensor | Callable[[Tensor], Tensor],
    prior_logits: Tensor | None,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ALS loss for (B, T, V) logits, (B, T) targets (PAD_ID = padding) and per-token weights ``alpha``.

    ``alpha`` is a (B, T) tensor or a function of the log-probabilities (so the training step
    computes log_softmax once, e.g. ``lambda lp: smoothing_weight(logits, mask, lam, fn, lp)``).
    ``prior_logits`` None means a uniform prior (the fallback before the first checkpoint).
    Returns (loss, logs) with the CE and prior terms' means for logging.
    """
    mask = targets != PAD_ID
    # One log-softmax serves the CE and (at T = 1) the prior term; padded rows are zeroed first so
    # garbage there (inf, nan) reaches neither the value nor the gradient.
    log_p = F.log_softmax(logits.float().masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if prior_logits is None:
        prior_term = -log_p.mean(dim=-1)  # CE(uniform, p)
    elif temperature == 1.0:
        prior_probs = F.softmax(prior_logits.detach().float().masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
        prior_term = -(prior_probs * log_p).sum(dim=-1)
    else:
        prior_probs = F.softmax(prior_logits.detach().float() / temperature, dim=-1)
        prior_term = (
            soft_target_cross_entropy(logits.float(), prior_probs, temperature=temperature, mask=mask, reduction="none")
            * temperature**2
        )
    alpha = (alpha(log_p) if callable(alpha) else alpha).to(nll.dtype)
    per_token = (1.0 - alpha) * nll + alpha * prior_term
    loss = _masked_mean(per_token, mask)
    return loss, {
        "loss/ce": _masked_mean(nll, mask).detach(),
        "loss/prior": _masked_mean(prior_term, mask).detach(),
        "weight/alpha": _masked_mean(alpha, mask),
    }


def ce_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean token NLL, summed the same way as ``als_sk_loss`` so that a = 0 reproduces it bit for bit."""
    mask = targets != PAD_ID
    log_p = F.log_softmax(logits.float().masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
    loss = _masked_mean(-log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1), mask)
    return loss, {"loss/ce": loss.detach()}


def label_smoothing_loss(logits: Tensor, targets: Tensor, smoothing: float) -> tuple[Tensor, dict[str, Tensor]]:
    loss = label_smoothing_cross_entropy(logits.float(), targets, smoothing, ignore_index=PAD_ID)
    nll = F.cross_entropy(logits.detach().float().transpose(1, 2), targets, ignore_index=PAD_ID)
    return loss, {"loss/ce": nll}


def confidence_penalty_loss(logits: Tensor, targets: Tensor, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """CE - beta * H(p), both averaged over real tokens (Pereyra et al. 2017)."""
    mask = targets != PAD_ID
    log_p = F.log_softmax(logits.float(), dim=-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    h = token_entropy(log_p)
    ce, ent = _masked_mean(nll, mask), _masked_mean(h, mask)
    return ce - beta * ent, {"loss/ce": ce.detach(), "loss/entropy": ent.detach()}


def label_smoothing_prior_loss(
    logits: Tensor, targets: Tensor, smoothing: float, prior_probs: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """q = (1 - eps) e_y + eps u with a fixed prior ``u`` (V,): mean_i (1 - eps) CE_i - eps sum_k u_k log p_ik.
    ``u`` uniform is label smoothing; the unigram distribution of the train targets is ``ls_unigram``."""
    mask = targets != PAD_ID
    log_p = F.log_softmax(logits.float().masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    prior_term = -(log_p @ prior_probs.to(log_p))
    loss = _masked_mean((1.0 - smoothing) * nll + smoothing * prior_term, mask)
    return loss, {"loss/ce": _masked_mean(nll, mask).detach(), "loss/prior": _masked_mean(prior_term, mask).detach()}


def unigram_distribution(sequences: list[list[int]], vocab_size: int, eos_id: int) -> Tensor:
    """Relative frequency of each id among the predicted target tokens (each sequence + </s>)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in sequences:
        counts += torch.bincount(torch.tensor(ids + [eos_id], dtype=torch.long), minlength=vocab_size).double()
    return (counts / counts.sum()).float()


def tf_kd_teacher(vocab_size: int, correct_prob: float, temperature: float) -> tuple[float, float]:
    """(gold, other) probabilities of TF-KD_reg's softened manual teacher softmax(p^d / T) (module doc)."""
    other = (1.0 - correct_prob) / (vocab_size - 1)
    z_gold, z_other = correct_prob / temperature, other / temperature
    norm = math.exp(z_gold) + (vocab_size - 1) * math.exp(z_other)
    return math.exp(z_gold) / norm, math.exp(z_other) / norm


def tf_kd_loss(
    logits: Tensor, targets: Tensor, alpha: float, temperature: float, correct_prob: float, multiplier: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """TF-KD_reg per token: (1 - a) CE + a m KL(t || p), t = softmax(p^d / T) (module doc).

    t takes two values per row (gold, other), so KL(t || p) = sum_k t_k log t_k - t_other sum_k log p_k
    - (t_gold - t_other) log p_y is computed without a (N, V) target tensor."""
    mask = targets != PAD_ID
    vocab = logits.shape[-1]
    t_gold, t_other = tf_kd_teacher(vocab, correct_prob, temperature)
    log_p = F.log_softmax(logits.float().masked_fill(~mask.unsqueeze(-1), 0.0), dim=-1)
    log_py = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    neg_entropy = t_gold * math.log(t_gold) + (vocab - 1) * t_other * math.log(t_other)
    kl = neg_entropy - t_other * log_p.sum(-1) - (t_gold - t_other) * log_py
    ce, kl_mean = _masked_mean(-log_py, mask), _masked_mean(kl, mask)
    loss = (1.0 - alpha) * ce + alpha * multiplier * kl_mean
    return loss, {"loss/ce": ce.detach(), "loss/kl_teacher": kl_mean.detach()}


def ps_kd_alpha(alpha_T: float, epoch: int, total_epochs: int) -> float:
    """a_t = alpha_T * t / T_epochs for the 1-based epoch t (official: alpha_T * (epoch + 1) / end_epoch)."""
    return alpha_T * min(epoch, total_epochs) / max(total_epochs, 1)


def ps_kd_loss(
    logits: Tensor, targets: Tensor, alpha_t: float, teacher_logits: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """PS-KD: CE against q = (1 - a_t) e_y + a_t softmax(teacher); no teacher (epoch 1) = plain CE."""
    if teacher_logits is None:
        loss, logs = ce_loss(logits, targets)
        return loss, {**logs, "weight/alpha": torch.tensor(0.0)}
    alpha = torch.full(targets.shape, float(alpha_t), device=logits.device)
    loss, logs = als_sk_loss(logits, targets, alpha, teacher_logits)
    return loss, logs
