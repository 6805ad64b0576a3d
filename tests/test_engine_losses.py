"""Loss primitives against values worked out by hand.

Running example, two classes:
    logits [0, ln 3]  -> softmax [1/4, 3/4]   (call it P)
    logits [0, 0]     -> softmax [1/2, 1/2]   (call it U)
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skdcli.engine.losses import (
    kd_kl_loss,
    label_smoothing_cross_entropy,
    soft_target_cross_entropy,
    standardize_logits,
)

LN3 = math.log(3.0)
P_LOGITS = [0.0, LN3]
U_LOGITS = [0.0, 0.0]

KL_P_U = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL(P || U)
KL_U_P = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(U || P)
M = [0.375, 0.625]  # (P + U) / 2
JS_P_U = 0.5 * (0.25 * math.log(0.25 / M[0]) + 0.75 * math.log(0.75 / M[1])) + 0.5 * (
    0.5 * math.log(0.5 / M[0]) + 0.5 * math.log(0.5 / M[1])
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- kd_kl_loss: directions, T², detach


@pytest.mark.parametrize(
    "direction, expected",
    [("forward", KL_P_U), ("reverse", KL_U_P), ("symmetric", KL_P_U + KL_U_P), ("js", JS_P_U)],
)
def test_kd_kl_directions(direction, expected):
    # student U, teacher P; forward = KL(teacher || student)
    loss = kd_kl_loss(t([U_LOGITS]), t([P_LOGITS]), direction=direction)
    close(loss, expected)


def test_js_is_symmetric_and_bounded():
    a = kd_kl_loss(t([U_LOGITS]), t([P_LOGITS]), direction="js")
    b = kd_kl_loss(t([P_LOGITS]), t([U_LOGITS]), direction="js")
    close(a, b.item())
    assert a.item() <= math.log(2.0)


def test_temperature_and_t2_scale():
    # teacher [0, 2 ln 3] / T=2 -> [0, ln 3] -> P; student stays U
    teacher = t([[0.0, 2 * LN3]])
    student = t([U_LOGITS])
    close(kd_kl_loss(student, teacher, 2.0, t2_scale=False), KL_P_U)
    close(kd_kl_loss(student, teacher, 2.0), 4.0 * KL_P_U)


def test_gradient_is_q_minus_p_and_teacher_is_detached():
    # d KL(P || softmax(z)) / dz = softmax(z) - P = [1/2 - 1/4, 1/2 - 3/4]
    student = t([U_LOGITS]).requires_grad_()
    teacher = t([P_LOGITS]).requires_grad_()
    kd_kl_loss(student, teacher).backward()
    close(student.grad, [[0.25, -0.25]])
    assert teacher.grad is None

    student.grad = None
    kd_kl_loss(student, teacher, detach_teacher=False).backward()
    assert teacher.grad is not None


# [0, ln3]: mean ln3/2, Bessel std sqrt(2 (ln3/2)^2 / 1) = ln3/sqrt2  ->  about [-1/sqrt2, 1/sqrt2]
Z1 = (LN3 / 2) / (1e-7 + LN3 / math.sqrt(2))


def test_standardize_logits_by_hand():
    close(standardize_logits(t(P_LOGITS)), [-Z1, Z1])


def test_kd_kl_standardize():
    # scale and shift (almost) no longer matter: [0, 5] and [1, 2] both become about [-1/sqrt2, 1/sqrt2]
    torch.testing.assert_close(kd_kl_loss(t([[0.0, 5.0]]), t([[1.0, 2.0]]), standardize=True), t(0.0))
    # student [0, 0] has std 0 -> z = 0 -> U; teacher -> softmax([-Z1, Z1]) = [a, 1 - a]
    a = 1 / (1 + math.exp(2 * Z1))
    expected = a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5)
    close(kd_kl_loss(t([U_LOGITS]), t([P_LOGITS]), standardize=True), expected)


# ---------------------------------------------------------------- kd_kl_loss: reductions with a mask

# (B=2, T=3, V=2) positions:  seq0 = [A, C, A],  seq1 = [C, pad, pad]
# A: student U, teacher P -> KL_P_U     C: student P, teacher U -> KL_U_P     pad: nan garbage
NAN = float("nan")
STUDENT = [[U_LOGITS, P_LOGITS, U_LOGITS], [P_LOGITS, [NAN, NAN], [NAN, NAN]]]
TEACHER = [[P_LOGITS, U_LOGITS, P_LOGITS], [U_LOGITS, [NAN, NAN], [NAN, NAN]]]
MASK = torch.tensor([[True, True, True], [True, False, False]])
A, C = KL_P_U, KL_U_P


@pytest.mark.parametrize(
    "reduction, expected",
    [
        ("none", [[A, C, A], [C, 0.0, 0.0]]),
        ("sum", 2 * A + 2 * C),
        ("mean", (2 * A + 2 * C) / 4),
        ("batchmean", (2 * A + 2 * C) / 2),
        ("element_mean", (2 * A + 2 * C) / (4 * 2)),
        ("sequence_mean", ((2 * A + C) / 3 + C / 1) / 2),
    ],
)
def test_kd_kl_reductions_with_mask(reduction, expected):
    student = t(STUDENT).requires_grad_()
    loss = kd_kl_loss(student, t(TEACHER), mask=MASK, reduction=reduction)
    close(loss, expected)
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()  # padding garbage does not reach the gradient
    assert (student.grad[1, 1:] == 0).all()


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_element_mean_matches_torch_kl_div_default():
    g = torch.Generator().manual_seed(0)
    s, tt = torch.randn(4, 5, 7, generator=g), torch.randn(4, 5, 7, generator=g)
    ours = kd_kl_loss(s, tt, reduction="element_mean")
    ref = F.kl_div(F.log_softmax(s, -1), F.softmax(tt, -1), reduction="mean")
    torch.testing.assert_close(ours, ref)
    ours = kd_kl_loss(s, tt, 3.0, reduction="batchmean")
    ref = F.kl_div(F.log_softmax(s / 3, -1), F.softmax(tt / 3, -1), reduction="batchmean") * 9
    torch.testing.assert_close(ours, ref)


def test_all_masked_mean_is_zero():
    loss = kd_kl_loss(t([U_LOGITS]), t([P_LOGITS]), mask=torch.tensor([False]), reduction="mean")
    close(loss, 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(direction="sideways"), "direction"),
        (dict(reduction="avg"), "reduction"),
        (dict(mask=torch.ones(3, dtype=torch.bool)), "mask shape"),
        (dict(mask=torch.ones(1)), "bool"),
        (dict(reduction="sequence_mean"), "sequence_mean"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_kd_kl_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd_kl_loss(t([U_LOGITS]), t([P_LOGITS]), **kwargs)


def test_kd_kl_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        kd_kl_loss(t([U_LOGITS]), t([[0.0, 0.0, 0.0]]))


# ---------------------------------------------------------------- soft_target_cross_entropy


def test_soft_target_ce_by_hand():
    # logits P, target U: -(1/2 ln 1/4 + 1/2 ln 3/4)
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    close(soft_target_cross_entropy(t([P_LOGITS]), t([[0.5, 0.5]])), expected)
    # temperature divides the logits: [0, 2 ln3] / 2 = P
    close(soft_target_cross_entropy(t([[0.0, 2 * LN3]]), t([[0.5, 0.5]]), temperature=2.0), expected)


def test_soft_target_ce_reductions_with_mask():
    # rows: (P, target [1,0]) -> ln 4;  (U, target [0,1]) -> ln 2;  masked nan row
    logits = t([P_LOGITS, U_LOGITS, [NAN, NAN]])
    target = t([[1.0, 0.0], [0.0, 1.0], [NAN, NAN]])
    mask = torch.tensor([True, True, False])
    l4, l2 = math.log(4.0), math.log(2.0)
    close(soft_target_cross_entropy(logits, target, mask=mask, reduction="none"), [l4, l2, 0.0])
    close(soft_target_cross_entropy(logits, target, mask=mask, reduction="sum"), l4 + l2)
    close(soft_target_cross_entropy(logits, target, mask=mask, reduction="mean"), (l4 + l2) / 2)
    close(soft_target_cross_entropy(logits, target, mask=mask, reduction="batchmean"), (l4 + l2) / 3)


def test_soft_target_ce_keeps_target_gradient():
    target = t([[0.5, 0.5]]).requires_grad_()
    soft_target_cross_entropy(t([P_LOGITS]), target).backward()
    close(target.grad, [[-math.log(0.25), -math.log(0.75)]])


# ---------------------------------------------------------------- label_smoothing_cross_entropy


def test_label_smoothing_by_hand():
    # K=2, eps=0.1, y=1: q = [0.05, 0.95]; logits P
    expected = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))
    close(label_smoothing_cross_entropy(t([P_LOGITS]), torch.tensor([1]), 0.1), expected)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_label_smoothing_matches_torch(reduction):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 6, generator=g)  # (B, T, K)
    targets = torch.randint(0, 6, (3, 4), generator=g)
    targets[0, 2] = targets[2, 0] = -100
    ours = label_smoothing_cross_entropy(logits, targets, 0.2, reduction=reduction)
    ref = F.cross_entropy(logits.permute(0, 2, 1), targets, label_smoothing=0.2, reduction=reduction)
    torch.testing.assert_close(ours, ref)


def test_label_smoothing_equals_soft_target_ce():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, generator=g)
    targets = torch.randint(0, 4, (5,), generator=g)
    q = 0.9 * F.one_hot(targets, 4) + 0.1 / 4
    torch.testing.assert_close(
        label_smoothing_cross_entropy(logits, targets, 0.1), soft_target_cross_entropy(logits, q)
    )


def test_label_smoothing_errors():
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothing_cross_entropy(t([P_LOGITS]), torch.tensor([1]), 1.5)
    with pytest.raises(ValueError, match="reduction"):
        label_smoothing_cross_entropy(t([P_LOGITS]), torch.tensor([1]), 0.1, reduction="batchmean")
    with pytest.raises(ValueError, match="targets shape"):
        label_smoothing_cross_entropy(t([P_LOGITS]), torch.tensor([1, 0]), 0.1)
