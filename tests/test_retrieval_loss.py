"""The retrieval objective's terms on hand-computed 3x3 cases, and its switches."""

from __future__ import annotations

import math

import pytest
import torch

from skdcli.engine.schedules import Progress
from skdcli.retrieval.config import LossConfig, RetrievalConfig
from skdcli.retrieval.loss import (
    flops_reg,
    info_nce,
    l1_reg,
    retrieval_objective,
    score_matrices,
    self_kd,
    teacher_probs,
)

LN2 = math.log(2.0)


# -- plain-python references (no torch) ----------------------------------------------------------------------
def log_softmax_row(row: list[float]) -> list[float]:
    lse = math.log(sum(math.exp(x) for x in row))
    return [x - lse for x in row]


def softmax_row(row: list[float]) -> list[float]:
    return [math.exp(x) for x in log_softmax_row(row)]


def transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


def ce_diag(m: list[list[float]]) -> float:
    return sum(-log_softmax_row(row)[i] for i, row in enumerate(m)) / len(m)


def soft_ce(p: list[list[float]], s: list[list[float]]) -> float:
    return -sum(sum(pj * lj for pj, lj in zip(pr, log_softmax_row(sr))) for pr, sr in zip(p, s)) / len(s)


def t(m) -> torch.Tensor:
    return torch.tensor(m, dtype=torch.float64)


# -- InfoNCE ------------------------------------------------------------------------------------------------------
def test_info_nce_identity_scores_by_hand() -> None:
    # every row and column: -log(e / (e + 2)) = log(1 + 2/e)
    assert float(info_nce(t([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))) == pytest.approx(math.log(1 + 2 / math.e))


def test_info_nce_asymmetric_scores_by_hand() -> None:
    s = [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    rows = ((-2 + math.log(math.e**2 + 2)) + math.log(math.e + 2) + math.log(3)) / 3
    cols = ((-2 + math.log(math.e**2 + math.e + 1)) + math.log(3) + math.log(3)) / 3
    assert float(info_nce(t(s))) == pytest.approx(0.5 * (rows + cols))


def test_info_nce_is_symmetric() -> None:
    s = torch.randn(5, 5, dtype=torch.float64)
    assert float(info_nce(s)) == pytest.approx(float(info_nce(s.t())))


# -- the mutual self-KD term -------------------------------------------------------------------------------------
S_X = [[0, LN2, 0], [0, 0, 0], [0, 0, 0]]  # asymmetric teacher scores: softmax rows differ from softmax of S_x^T
STUDENT = [[2, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_self_kd_against_a_uniform_student_is_log3() -> None:
    p_i2t, p_t2i = teacher_probs(t(S_X), compat_official=False, detach=False)
    assert float(self_kd(torch.zeros(3, 3, dtype=torch.float64), p_i2t, p_t2i)) == pytest.approx(math.log(3))


def test_self_kd_by_hand_with_the_transposed_teacher() -> None:
    # teacher rows: softmax(S_x) = [1/4, 1/2, 1/4], uniform, uniform; softmax(S_x^T) = uniform, [1/2, 1/4, 1/4], uniform
    p_i2t, p_t2i = teacher_probs(t(S_X), compat_official=False, detach=False)
    third = [1 / 3] * 3
    assert torch.allclose(p_i2t, t([[0.25, 0.5, 0.25], third, third]))
    assert torch.allclose(p_t2i, t([third, [0.5, 0.25, 0.25], third]))
    expected = 0.5 * (
        soft_ce([[0.25, 0.5, 0.25], third, third], STUDENT)
        + soft_ce([third, [0.5, 0.25, 0.25], third], transpose(STUDENT))
    )
    assert float(self_kd(t(STUDENT), p_i2t, p_t2i)) == pytest.approx(expected)


def test_compat_official_reuses_the_image_to_text_teacher_rows() -> None:
    fixed = teacher_probs(t(S_X), compat_official=False, detach=False)
    compat = teacher_probs(t(S_X), compat_official=True, detach=False)
    assert torch.allclose(compat[1], compat[0])  # the official code's quirk: P_t2i = softmax_row(S_x)
    assert not torch.allclose(fixed[1], compat[1])
    third = [1 / 3] * 3
    expected = 0.5 * (
        soft_ce([[0.25, 0.5, 0.25], third, third], STUDENT)
        + soft_ce([[0.25, 0.5, 0.25], third, third], transpose(STUDENT))
    )
    assert float(self_kd(t(STUDENT), *compat)) == pytest.approx(expected)
    sym = torch.randn(3, 3, dtype=torch.float64)
    sym = sym + sym.t()  # for a symmetric teacher the two agree
    assert torch.allclose(teacher_probs(sym, False, False)[1], teacher_probs(sym, True, False)[1])


@pytest.mark.parametrize("detach", [True, False])
def test_detach_switch_controls_the_teacher_gradient(detach: bool) -> None:
    s_x = t(S_X).requires_grad_()
    student = t(STUDENT).requires_grad_()
    self_kd(student, *teacher_probs(s_x, compat_official=False, detach=detach)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    if detach:
        assert s_x.grad is None
    else:  # official code: gradient flows into the integrated (teacher) score
        assert s_x.grad is not None and s_x.grad.abs().sum() > 0


# -- regularisers and the whole objective ----------------------------------------------------------------------------
Z = [[0, 1, 2], [0, 0, 0], [3, 0, 0]]


def test_l1_by_hand() -> None:
    assert float(l1_reg(t(Z))) == pytest.approx((3 + 0 + 3) / 3)  # mean over rows of the row sums


def test_flops_regulariser_by_hand() -> None:
    assert float(flops_reg(t(Z))) == pytest.approx(1.0**2 + (1 / 3) ** 2 + (2 / 3) ** 2)  # column means, squared


def objective_inputs() -> dict:
    eye = torch.eye(3, dtype=torch.float64)
    return {
        "u_t": eye.clone(),
        "u_i": eye.clone(),
        "temp": torch.tensor(0.5, dtype=torch.float64),
        "z_i": t([[1, 0, 0], [0, 1, 0], [0, 0, 0]]),
        "z_t": t([[1, 0, 0], [0, 0, 0], [0, 0, 1]]),
    }


@pytest.mark.parametrize("method", ["skd", "contrastive"])
def test_whole_objective_by_hand(method: str) -> None:
    cfg = LossConfig(method=method, w_dense=0.1, w_sparse=0.2, lambda_dense=0.7, lambda_sparse=0.3)
    s_d = [[2, 0, 0], [0, 2, 0], [0, 0, 2]]  # cos = I, tau = 0.5
    s_s = [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    s_x = [[0.1 * a + 0.2 * b for a, b in zip(ra, rb)] for ra, rb in zip(s_d, s_s)]
    nce = lambda m: 0.5 * (ce_diag(m) + ce_diag(transpose(m)))
    contrastive = (0.7 * nce(s_d) + 0.3 * nce(s_s) + nce(s_x)) / 2
    p_i2t = [softmax_row(r) for r in s_x]
    p_t2i = [softmax_row(r) for r in transpose(s_x)]
    kd = lambda m: 0.5 * (soft_ce(p_i2t, m) + soft_ce(p_t2i, transpose(m)))
    distill = (0.7 * kd(s_d) + 0.3 * kd(s_s)) / 2
    reg = 0.5 * (0.01 * (2 / 3) + 0.02 * (2 / 3))  # L1: z_t rows sum 1, 0, 1; z_i rows 1, 1, 0
    expected = (0.5 * (contrastive + distill) if method == "skd" else 0.5 * contrastive) + reg
    loss, logs = retrieval_objective(objective_inputs(), cfg, eta_q=0.01, eta_d=0.02)
    assert float(loss) == pytest.approx(expected)
    assert float(logs["loss/dense"]) == pytest.approx(nce(s_d))
    assert ("loss/kd_dense" in logs) == (method == "skd")
    dense, sparse, integrated = score_matrices(objective_inputs(), 0.1, 0.2)
    assert torch.allclose(integrated, t(s_x))


def test_reg_warmup_is_a_quarter_at_half_the_warmup(retrieval_data) -> None:
    from skdcli.retrieval.recipe import RetrievalTask

    cfg = RetrievalConfig()
    cfg.train.max_steps, cfg.loss.reg_warmup_frac, cfg.loss.q_reg, cfg.loss.d_reg = 100, 0.2, 4e-3, 8e-3
    task = RetrievalTask(cfg, retrieval_data)  # T = 0.2 * 100 = 20 steps
    at = lambda step: Progress(step=step, total_steps=100, epoch=1, total_epochs=1)
    assert task.eta_q(at(10)) == pytest.approx(1e-3) and task.eta_d(at(10)) == pytest.approx(2e-3)
    assert (
        task.eta_q(at(0)) == 0.0
        and task.eta_q(at(20)) == pytest.approx(4e-3)
        and task.eta_q(at(90)) == pytest.approx(4e-3)
    )
