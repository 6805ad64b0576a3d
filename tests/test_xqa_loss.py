"""The xqa losses against hand-computed values (recipes/xqa/README.md, official src/utils.py)."""

from __future__ import annotations

import math

import pytest
import torch

from skdcli.xqa.loss import average_precision_at_k, map_at_k_coefficient, qa_cross_entropy, qa_kd_loss

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_span_cross_entropy_is_huggingface_s_loss_by_hand() -> None:
    # start row 0: softmax([0, ln2, 0]) = [1/4, 1/2, 1/4], gold 1 -> ln 2; row 1's gold 5 >= L is ignored
    start = torch.tensor([[0.0, LN2, 0.0], [3.0, 1.0, 2.0]])
    end = torch.zeros(2, 3)  # uniform: ln 3 for either gold
    loss = qa_cross_entropy(start, end, torch.tensor([1, 5]), torch.tensor([2, 0]))
    assert loss.item() == pytest.approx(0.5 * (LN2 + LN3), abs=1e-6)


def test_forward_kl_with_temperature_squared_and_batchmean_by_hand() -> None:
    # T = 2: teacher softmax([0, 2 ln2] / 2) = [1/3, 2/3]; student uniform [1/2, 1/2]
    teacher = torch.tensor([[0.0, 2 * LN2], [1.0, -1.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])  # row 1: student == teacher, KL 0
    kl_row0 = (1 / 3) * math.log((1 / 3) / 0.5) + (2 / 3) * math.log((2 / 3) / 0.5)
    expected = 4.0 * kl_row0 / 2  # x T^2, summed over positions, / batch size
    kl, kl_start, kl_end = qa_kd_loss(student, student, teacher, teacher, temperature=2.0, direction="fw")
    assert kl_start.item() == pytest.approx(expected, abs=1e-6)
    assert kl_end.item() == pytest.approx(expected, abs=1e-6)
    assert kl.item() == pytest.approx(expected, abs=1e-6)


def test_reverse_and_symmetric_kl_by_hand() -> None:
    teacher = torch.tensor([[0.0, 2 * LN2]])
    student = torch.zeros(1, 2)
    forward = 4.0 * ((1 / 3) * math.log(2 / 3) + (2 / 3) * math.log(4 / 3))
    reverse = 4.0 * (0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3)))
    rv, _, _ = qa_kd_loss(student, student, teacher, teacher, 2.0, "rv")
    sym, _, _ = qa_kd_loss(student, student, teacher, teacher, 2.0, "sym")
    assert rv.item() == pytest.approx(reverse, abs=1e-6)
    assert sym.item() == pytest.approx(forward + reverse, abs=1e-6)


def test_kl_is_zero_when_teacher_equals_student_and_start_end_are_averaged() -> None:
    z = torch.randn(4, 7)
    kl, _, _ = qa_kd_loss(z, z, z.clone(), z.clone(), temperature=2.0)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    t_end = torch.randn(4, 7)
    kl, ks, ke = qa_kd_loss(z, z, z.clone(), t_end, temperature=1.0)
    assert ks.item() == pytest.approx(0.0, abs=1e-6)
    assert kl.item() == pytest.approx(0.5 * ke.item(), rel=1e-6)


def test_masked_positions_carry_no_probability_nor_gradient() -> None:
    teacher = torch.tensor([[0.0, 2 * LN2, 50.0]])
    student = torch.tensor([[0.0, 0.0, -80.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    kl, _, _ = qa_kd_loss(student, student, teacher, teacher, 2.0, "fw", mask)
    expected = 4.0 * ((1 / 3) * math.log(2 / 3) + (2 / 3) * math.log(4 / 3))
    assert kl.item() == pytest.approx(expected, abs=1e-5)
    kl.backward()
    assert student.grad[0, 2].item() == 0.0
    assert torch.isfinite(student.grad).all()


def kaggle_apk(actual: list, predicted: list, k: int = 10) -> float:
    """Kaggle's ml_metrics apk, as the official src/utils.py calls it (actual=[1], predicted=flags)."""
    predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k) if actual else 0.0


def ranked_logits(order: list[int], length: int = 30) -> torch.Tensor:
    """Logits whose ranking puts ``order`` first (best first), every other position below."""
    z = torch.full((length,), -10.0)
    for rank, pos in enumerate(order):
        z[pos] = 10.0 - rank
    return z


@pytest.mark.parametrize(
    "order, expected",
    [
        ([12, 1, 2], 1.0),  # top-1 inside [gold-5, gold+4] = [5, 14]
        ([20, 5, 6], 0.5),  # first hit at rank 2 (gold - 5 is inside the window)
        ([15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 7], 0.0),  # gold + 5 is outside; the hit at rank 11 is beyond k
        ([0, 1, 2, 3, 4, 25, 26, 27, 28, 14], 0.1),  # the hit at rank 10 (gold + 4, the window's last position)
    ],
)
def test_windowed_average_precision_is_the_reciprocal_rank_of_the_first_hit(order, expected) -> None:
    gold = 10
    ap = average_precision_at_k(ranked_logits(order)[None], torch.tensor([gold]), k=10, window=5)
    assert ap.item() == pytest.approx(expected)
    top = ranked_logits(order).topk(10).indices.tolist()
    flags = [int(gold - 5 <= p < gold + 5) for p in top]
    assert kaggle_apk([1], flags) == pytest.approx(expected)


def test_window_zero_is_exact_position_mrr() -> None:
    gold = torch.tensor([10])
    assert average_precision_at_k(ranked_logits([9, 10])[None], gold, k=10, window=0).item() == 0.5
    assert average_precision_at_k(ranked_logits([9, 11])[None], gold, k=10, window=0).item() == 0.0


def test_coefficient_averages_start_and_end_over_the_batch_by_hand() -> None:
    t_start = torch.stack([ranked_logits([10]), ranked_logits([25, 11])])  # AP 1, 1/2
    t_end = torch.stack([ranked_logits([29, 28, 27, 26, 25, 24, 23, 22, 21, 20]), ranked_logits([12])])  # AP 0, 1
    c = map_at_k_coefficient(t_start, t_end, torch.tensor([10, 10]), torch.tensor([12, 12]), k=10, window=5)
    assert c.item() == pytest.approx(0.5 * (0.75 + 0.5))
    assert not c.requires_grad


def test_masked_positions_never_count_as_hits() -> None:
    z = ranked_logits([8, 10])[None]
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, 8] = False  # e.g. a question token inside the window: skipped, the next ranked position is 10
    ap = average_precision_at_k(z, torch.tensor([10]), k=10, window=5, mask=mask)
    assert ap.item() == 1.0
