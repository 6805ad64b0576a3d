"""ALS-SK and the baselines against hand-computed values and the identities in loss.py's doc."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skdcli.engine.losses import label_smoothing_cross_entropy
from skdcli.nlg_smooth.loss import (
    als_sk_loss,
    ce_loss,
    confidence_penalty_loss,
    label_smoothing_loss,
    label_smoothing_prior_loss,
    ps_kd_alpha,
    ps_kd_loss,
    smoothing_weight,
    soft_targets,
    tf_kd_loss,
    tf_kd_teacher,
    token_entropy,
    unigram_distribution,
)


def _batch(seed: int = 0, v: int = 6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, v, generator=g)
    prior = torch.randn(2, 4, v, generator=g)
    targets = torch.randint(4, v, (2, 4), generator=g)
    targets[1, 2:] = 0  # padding
    return logits, prior, targets


def test_hand_computed_value() -> None:
    # one token, V = 2: p = softmax([0, ln 3]) = (1/4, 3/4), prior p~ = (1/2, 1/2), gold y = 0 is... use ids >= 4?
    # ids 0-3 are special, but the loss works on any ids; padding is id 0, so use V = 6 with logits only on 4, 5.
    logits = torch.full((1, 1, 6), -1e9)
    logits[0, 0, 4], logits[0, 0, 5] = 0.0, math.log(3.0)
    prior = torch.full((1, 1, 6), -1e9)
    prior[0, 0, 4] = prior[0, 0, 5] = 0.0
    targets = torch.tensor([[4]])
    alpha = torch.tensor([[0.25]])
    loss, logs = als_sk_loss(logits, targets, alpha, prior)
    # q = 0.75 e_4 + 0.25 (1/2, 1/2) = (0.875, 0.125); L = -(0.875 ln 1/4 + 0.125 ln 3/4)
    expected = -(0.875 * math.log(0.25) + 0.125 * math.log(0.75))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(logs["loss/ce"]) == pytest.approx(math.log(4.0), rel=1e-6)
    assert float(logs["loss/prior"]) == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)


def test_weight_zero_is_cross_entropy_exactly() -> None:
    logits, prior, targets = _batch()
    alpha = torch.zeros(2, 4)
    loss, _ = als_sk_loss(logits, targets, alpha, prior)
    ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0)
    assert torch.equal(loss, ce_loss(logits, targets)[0])  # bit for bit: the --baseline loss
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)  # torch's own CE sums in another order
    assert float(confidence_penalty_loss(logits, targets, beta=0.0)[0]) == pytest.approx(float(ce), rel=1e-6)
    # lam = 0 makes every weight 0 whatever the entropy
    assert torch.count_nonzero(smoothing_weight(logits, targets != 0, 0.0, "norm_entropy")) == 0


def test_uniform_prior_and_constant_weight_is_label_smoothing() -> None:
    logits, _, targets = _batch(1)
    eps = 0.1
    alpha = smoothing_weight(logits, targets != 0, eps, "constant")
    assert torch.allclose(alpha[targets != 0], torch.full_like(alpha[targets != 0], eps))
    uniform_logits = torch.zeros_like(logits)  # an explicit uniform prior
    for prior in (None, uniform_logits):
        loss, _ = als_sk_loss(logits, targets, alpha, prior)
        torch_ls = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0, label_smoothing=eps)
        assert float(loss) == pytest.approx(float(torch_ls), rel=1e-6)
    assert float(label_smoothing_loss(logits, targets, eps)[0]) == pytest.approx(
        float(label_smoothing_cross_entropy(logits, targets, eps, ignore_index=0)), rel=1e-7
    )


def test_soft_targets_are_distributions_and_the_loss_is_their_cross_entropy() -> None:
    logits, prior, targets = _batch(2)
    mask = targets != 0
    alpha = smoothing_weight(logits, mask, 0.7, "batch_minmax")
    q = soft_targets(targets, alpha, F.softmax(prior, -1))
    assert torch.all(q >= 0)
    assert torch.allclose(q.sum(-1), torch.ones(2, 4))
    expected = -(q * F.log_softmax(logits, -1)).sum(-1)[mask].mean()
    loss, _ = als_sk_loss(logits, targets, alpha, prior)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_padding_never_contributes() -> None:
    logits, prior, targets = _batch(3)
    logits.requires_grad_(True)
    alpha = smoothing_weight(logits, targets != 0, 0.5, "norm_entropy")
    assert torch.all(alpha[targets == 0] == 0)
    loss, _ = als_sk_loss(logits, targets, alpha, prior)
    loss.backward()
    assert torch.all(logits.grad[targets == 0] == 0)
    # garbage (even inf) at padded positions changes nothing
    poisoned = logits.detach().clone()
    poisoned[targets == 0] = float("inf")
    prior2 = prior.clone()
    prior2[targets == 0] = float("nan")
    loss2, _ = als_sk_loss(poisoned, targets, alpha, prior2)
    assert float(loss2) == pytest.approx(float(loss.detach()), rel=1e-6)
    shifted = logits.detach().clone()
    shifted[targets == 0] = 100.0 * torch.randn_like(shifted[targets == 0])
    for fn in (
        lambda x: label_smoothing_loss(x, targets, 0.1)[0],
        lambda x: confidence_penalty_loss(x, targets, 0.1)[0],
        lambda x: ce_loss(x, targets)[0],
    ):
        assert float(fn(shifted)) == pytest.approx(float(fn(logits.detach())), rel=1e-6)


def test_smoothing_weight_range_direction_and_no_gradient() -> None:
    logits, _, targets = _batch(4)
    logits.requires_grad_(True)
    mask = targets != 0
    v = logits.shape[-1]
    h = token_entropy(F.log_softmax(logits.detach(), -1))
    for fn in ("norm_entropy", "one_minus_norm_entropy", "batch_minmax", "constant"):
        a = smoothing_weight(logits, mask, 0.3, fn)
        assert not a.requires_grad
        assert torch.all(a[mask] >= 0) and torch.all(a[mask] <= 0.3 + 1e-7)
    a = smoothing_weight(logits, mask, 0.3, "norm_entropy")
    assert torch.allclose(a[mask], 0.3 * h[mask] / math.log(v))
    b = smoothing_weight(logits, mask, 0.3, "batch_minmax")
    assert float(b[mask].max()) == pytest.approx(0.3) and float(b[mask].min()) == pytest.approx(0.0, abs=1e-7)
    # the uniform distribution has the largest entropy: weight lam; a one-hot-like one about 0
    flat = smoothing_weight(torch.zeros(1, 1, v), torch.ones(1, 1, dtype=torch.bool), 0.3, "norm_entropy")
    peaked = smoothing_weight(
        torch.tensor([[[50.0] + [0.0] * (v - 1)]]), torch.ones(1, 1, dtype=torch.bool), 0.3, "norm_entropy"
    )
    assert float(flat) == pytest.approx(0.3) and float(peaked) < 1e-6
    with pytest.raises(ValueError, match="alpha_fn"):
        smoothing_weight(logits, mask, 0.3, "nope")


def test_temperature_scales_the_prior_term_by_t_squared() -> None:
    logits, prior, targets = _batch(5)
    mask = targets != 0
    alpha = torch.full((2, 4), 0.4)
    t = 2.0
    loss, logs = als_sk_loss(logits, targets, alpha, prior, temperature=t)
    p_t = F.softmax(prior / t, -1)
    kd = -(p_t * F.log_softmax(logits / t, -1)).sum(-1) * t * t
    nll = -F.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    expected = (0.6 * nll + 0.4 * kd)[mask].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_confidence_penalty_hand_value() -> None:
    logits = torch.full((1, 1, 6), -1e9)
    logits[0, 0, 4], logits[0, 0, 5] = 0.0, math.log(3.0)
    loss, logs = confidence_penalty_loss(logits, torch.tensor([[5]]), beta=0.5)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(loss) == pytest.approx(-math.log(0.75) - 0.5 * h, rel=1e-5)
    assert float(logs["loss/entropy"]) == pytest.approx(h, rel=1e-6)


def test_weight_function_form_equals_the_tensor_form() -> None:
    logits, prior, targets = _batch(6)
    mask = targets != 0
    as_tensor, _ = als_sk_loss(logits, targets, smoothing_weight(logits, mask, 0.5, "norm_entropy"), prior)
    as_fn, logs = als_sk_loss(
        logits, targets, lambda lp: smoothing_weight(logits, mask, 0.5, "norm_entropy", lp), prior
    )
    assert float(as_fn) == pytest.approx(float(as_tensor), rel=1e-6)
    assert 0 < float(logs["weight/alpha"]) <= 0.5


# -- the comparison points of issue 14: LS with a unigram prior, TF-KD_reg, PS-KD ------------------------------
def _two_word_logits() -> torch.Tensor:
    """One token, V = 6, only ids 4 and 5 possible: p = (1/4, 3/4) on them."""
    logits = torch.full((1, 1, 6), -1e9)
    logits[0, 0, 4], logits[0, 0, 5] = 0.0, math.log(3.0)
    return logits


def test_unigram_label_smoothing_hand_value() -> None:
    u = unigram_distribution([[4, 5], [5]], vocab_size=6, eos_id=3)  # tokens 4 5 </s> 5 </s>
    assert torch.allclose(u, torch.tensor([0, 0, 0, 2 / 5, 1 / 5, 2 / 5]))
    prior = torch.tensor([0, 0, 0, 0, 0.2, 0.8])
    loss, logs = label_smoothing_prior_loss(_two_word_logits(), torch.tensor([[4]]), 0.1, prior)
    expected = 0.9 * math.log(4) - 0.1 * (0.2 * math.log(1 / 4) + 0.8 * math.log(3 / 4))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(logs["loss/ce"]) == pytest.approx(math.log(4), rel=1e-6)
    # a uniform prior is plain label smoothing
    logits, _, targets = _batch(3)
    uniform = torch.full((6,), 1 / 6)
    torch_ls = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0, label_smoothing=0.1)
    assert float(label_smoothing_prior_loss(logits, targets, 0.1, uniform)[0]) == pytest.approx(
        float(torch_ls), rel=1e-6
    )


def test_tf_kd_hand_value_and_the_official_code_form() -> None:
    # V = 3, one token, gold 1: p^d = (0.05, 0.9, 0.05); teacher t = softmax(p^d / 2)
    logits, targets = torch.tensor([[[0.5, 1.0, -1.0]]]), torch.tensor([[1]])
    t = torch.softmax(torch.tensor([0.05, 0.9, 0.05]) / 2.0, -1)
    log_p = torch.log_softmax(logits[0, 0], -1)
    kl = float((t * (t.log() - log_p)).sum())
    ce = float(-log_p[1])
    loss, logs = tf_kd_loss(logits, targets, alpha=0.3, temperature=2.0, correct_prob=0.9, multiplier=2.0)
    assert float(loss) == pytest.approx(0.7 * ce + 0.3 * 2.0 * kl, rel=1e-6)
    assert float(logs["loss/kl_teacher"]) == pytest.approx(kl, rel=1e-6)
    assert tf_kd_teacher(3, 0.9, 2.0) == pytest.approx((float(t[1]), float(t[0])), rel=1e-6)
    # the official loss_kd_regularization on the flattened real tokens: KLDivLoss() averages over
    # tokens x classes and multiplies by `multiplier`; ours with m = multiplier / V is the same number
    logits, _, targets = _batch(4)
    mask = targets != 0
    flat, gold = logits[mask], targets[mask]
    v, c, temp, a, mult = flat.shape[1], 0.99, 20.0, 0.1, 100.0
    teacher_soft = torch.full_like(flat, (1 - c) / (v - 1))
    teacher_soft[torch.arange(len(gold)), gold] = c
    # nn.KLDivLoss() with its default reduction='mean' = the elementwise sum / (tokens x classes)
    kl_mean = (
        F.kl_div(F.log_softmax(flat, dim=1), F.softmax(teacher_soft / temp, dim=1), reduction="sum") / flat.numel()
    )
    official = (1 - a) * F.cross_entropy(flat, gold) + a * mult * kl_mean
    ours, _ = tf_kd_loss(logits, targets, alpha=a, temperature=temp, correct_prob=c, multiplier=mult / v)
    assert float(ours) == pytest.approx(float(official), rel=1e-5)


def test_ps_kd_hand_value_schedule_and_first_epoch() -> None:
    prior = torch.full((1, 1, 6), -1e9)
    prior[0, 0, 4] = prior[0, 0, 5] = 0.0  # teacher (1/2, 1/2)
    loss, _ = ps_kd_loss(_two_word_logits(), torch.tensor([[4]]), 0.25, prior)
    assert float(loss) == pytest.approx(-(0.875 * math.log(0.25) + 0.125 * math.log(0.75)), rel=1e-6)
    # a_t = alpha_T * t / T over 1-based epochs (official: alpha_T * (epoch + 1) / end_epoch, 0-based)
    assert ps_kd_alpha(0.8, 1, 10) == pytest.approx(0.08) and ps_kd_alpha(0.8, 10, 10) == pytest.approx(0.8)
    logits, _, targets = _batch(5)
    assert torch.equal(ps_kd_loss(logits, targets, 0.5, None)[0], ce_loss(logits, targets)[0])  # epoch 1: CE
