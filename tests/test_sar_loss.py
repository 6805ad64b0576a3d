"""Every sar loss against values computed by hand (plain-Python softmax / KL on tiny logits, and pinned
numbers), the AWA module, the last-iteration cache and the structured epoch orders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skdcli.engine.schedules import Progress
from skdcli.sar.config import AWAConfig
from skdcli.sar.loss import (
    byot_loss,
    cs_kd_loss,
    dense_votes,
    dlb_loss,
    drrnet_loss,
    ps_kd_loss,
    tf_kd_reg_loss,
    tf_kd_self_loss,
    zipf_ls_loss,
    zipf_ranks,
)
from skdcli.sar.sampling import overlapping_order, paired_order
from skdcli.sar.signals import AdaptiveWeightAssignment, LastIterationLogits


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl(p, q):  # KL(p || q)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def ce(z, y):
    return -math.log(softmax(z)[y])


A = [1.0, 0.0, -1.0]
B = [0.5, 0.5, 0.0]
C = [-0.3, 1.2, 0.1]


def T(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_cs_kd_is_ce_plus_t2_kl_from_the_pair() -> None:
    loss, terms = cs_kd_loss(T(A, C), T(B, A), torch.tensor([0, 1]), temperature=4.0, weight=1.0)
    want_ce = (ce(A, 0) + ce(C, 1)) / 2
    want_kl = 16 * (kl(softmax(B, 4), softmax(A, 4)) + kl(softmax(A, 4), softmax(C, 4))) / 2
    assert float(terms["loss/ce"]) == pytest.approx(want_ce, abs=1e-10)
    assert float(terms["loss/cls"]) == pytest.approx(want_kl, abs=1e-10)
    assert float(loss) == pytest.approx(want_ce + want_kl, abs=1e-10)
    assert float(loss) == pytest.approx(0.8733705567, abs=1e-8)  # pinned


def test_cs_kd_pair_gets_no_gradient() -> None:
    pair = T(B).requires_grad_(True)
    loss, _ = cs_kd_loss(T(A).requires_grad_(True), pair, torch.tensor([0]), 4.0, 1.0)
    loss.backward()
    assert pair.grad is None


def test_ps_kd_soft_targets_mix_label_and_last_epoch() -> None:
    past = T([0.2, 0.5, 0.3], [0.0, 0.0, 0.0])
    filled = torch.tensor([True, False])
    loss, _ = ps_kd_loss(T(A, C), torch.tensor([0, 2]), past, filled, alpha_t=0.4)
    q0 = [0.6 + 0.4 * 0.2, 0.4 * 0.5, 0.4 * 0.3]  # (1-a) onehot + a past
    q1 = [0.0, 0.0, 1.0]  # never predicted: its one-hot label (official: memory starts one-hot)
    want = (
        -sum(q * math.log(p) for q, p in zip(q0, softmax(A)))
        - sum(q * math.log(p) for q, p in zip(q1, softmax(C)) if q)
    ) / 2
    assert float(loss) == pytest.approx(want, abs=1e-10)


def test_tf_kd_reg_matches_the_official_formula() -> None:
    # official: (1-a) CE + a * multiplier * KLDivLoss()(log_softmax(z), softmax(p_d / T)), mean over B*K
    loss, terms = tf_kd_reg_loss(
        T(A), torch.tensor([1]), alpha=0.1, temperature=20.0, multiplier=100.0, correct_prob=0.9
    )
    pd = [0.05, 0.9, 0.05]
    target = softmax(pd, 20.0)
    elem = sum(t * (math.log(t) - math.log(q)) for t, q in zip(target, softmax(A))) / 3
    want = 0.9 * ce(A, 1) + 0.1 * 100 * elem
    assert float(terms["loss/kl_virtual"]) == pytest.approx(100 * elem, abs=1e-10)
    assert float(loss) == pytest.approx(want, abs=1e-10)
    batchmean, _ = tf_kd_reg_loss(T(A), torch.tensor([1]), 0.1, 20.0, 100.0, 0.9, reduction="batchmean")
    assert float(batchmean) == pytest.approx(0.9 * ce(A, 1) + 0.1 * 100 * elem * 3, abs=1e-10)


def test_tf_kd_self_scales_by_t2_and_multiplier() -> None:
    loss, _ = tf_kd_self_loss(T(A), T(B), torch.tensor([0]), alpha=0.95, temperature=6.0, multiplier=50.0)
    elem = kl(softmax(B, 6), softmax(A, 6)) / 3
    assert float(loss) == pytest.approx(0.05 * ce(A, 0) + 0.95 * elem * 36 * 50, abs=1e-9)


def test_byot_deepest_teaches_every_exit() -> None:
    f1, f2, fd = T([1.0, 2.0]), T([0.0, 1.0]), T([0.5, 0.5])
    loss, terms = byot_loss(
        [f1, f2], [T(A), T(B)], fd, T(C), torch.tensor([1]), alpha=0.3, temperature=3.0, feature_weight=0.03
    )
    want = ce(C, 1)
    for z, f in ((A, [1.0, 2.0]), (B, [0.0, 1.0])):
        l2 = sum((a - b) ** 2 for a, b in zip(f, [0.5, 0.5]))
        want += 0.7 * ce(z, 1) + 0.3 * 9 * kl(softmax(C, 3), softmax(z, 3)) + 0.03 * l2
    assert float(loss) == pytest.approx(want, abs=1e-10)
    assert set(terms) == {
        "loss/ce_deep",
        "loss/ce_exit1",
        "loss/kl_exit1",
        "loss/l2_exit1",
        "loss/ce_exit2",
        "loss/kl_exit2",
        "loss/l2_exit2",
    }


def test_byot_teacher_side_is_detached() -> None:
    deep = T(C).requires_grad_(True)
    feat = T([0.5, 0.5]).requires_grad_(True)
    loss, _ = byot_loss([T([1.0, 2.0])], [T(A).requires_grad_(True)], feat, deep, torch.tensor([1]), 0.3, 3.0, 0.03)
    loss.backward()
    # only the deepest CE reaches the deepest logits; nothing reaches its feature
    want = torch.softmax(deep.detach(), -1) - torch.nn.functional.one_hot(torch.tensor([1]), 3)
    assert torch.allclose(deep.grad, want)
    assert feat.grad is None


def test_dlb_kl_only_on_chips_of_the_last_iteration() -> None:
    mask = torch.tensor([True, False])
    loss, terms = dlb_loss(T(A, C), torch.tensor([0, 1]), T(B, A), mask, temperature=3.0, weight=1.0)
    want_kl = 9 * kl(softmax(B, 3), softmax(A, 3))  # mean over the one covered chip
    assert float(terms["loss/kl_last"]) == pytest.approx(want_kl, abs=1e-10)
    assert float(loss) == pytest.approx((ce(A, 0) + ce(C, 1)) / 2 + want_kl, abs=1e-10)
    none, t2 = dlb_loss(T(A), torch.tensor([0]), None, None, 3.0, 1.0)
    assert float(t2["loss/kl_last"]) == 0.0 and float(none) == pytest.approx(ce(A, 0))


def test_zipf_ranks_break_ties_at_the_smallest_rank() -> None:
    ranks = zipf_ranks(torch.tensor([[3.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 5.0]]))
    assert ranks.tolist() == [[1, 3, 1, 4], [2, 2, 2, 1]]
    votes = dense_votes(torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]]))
    assert votes.tolist() == [[1.0, 2.0, 0.0]]


def test_zipf_ls_targets_non_target_classes_by_rank() -> None:
    z = [2.0, 1.0, 0.5, -1.0]
    loss, terms = zipf_ls_loss(T(z), torch.tensor([1]), T(z), weight=1.0, power=1.0)
    # ranks of z: [1, 2, 3, 4]; non-target (class 1 removed): ranks 1, 3, 4 -> d ∝ 1, 1/3, 1/4
    d = [1.0, 1 / 3, 1 / 4]
    d = [v / sum(d) for v in d]
    q = softmax([2.0, 0.5, -1.0])
    assert float(terms["loss/zipf"]) == pytest.approx(kl(d, q), abs=1e-10)
    assert float(loss) == pytest.approx(ce(z, 1) + kl(d, q), abs=1e-10)
    masked, t = zipf_ls_loss(T(z, z), torch.tensor([1, 0]), T(z, z), 1.0, loss_mask=True)
    # only the second chip (predicted 0 = its label) counts
    d2 = [1 / 2, 1 / 3, 1 / 4]
    d2 = [v / sum(d2) for v in d2]
    assert float(t["loss/zipf"]) == pytest.approx(kl(d2, softmax([1.0, 0.5, -1.0])), abs=1e-10)


def test_drrnet_weights_both_teachers_and_skips_missing_ones() -> None:
    y = torch.tensor([0, 1])
    loss, terms = drrnet_loss(
        T(A, C), y, T(B, B), T(C, A), torch.tensor([True, False]), w_off=0.7, w_on=0.3, temperature=2.0, weight=0.5
    )
    k_off = 4 * (kl(softmax(B, 2), softmax(A, 2)) + kl(softmax(B, 2), softmax(C, 2))) / 2
    k_on = 4 * kl(softmax(C, 2), softmax(A, 2))
    want = (ce(A, 0) + ce(C, 1)) / 2 + 0.5 * (0.7 * k_off + 0.3 * k_on)
    assert float(terms["loss/kl_offline"]) == pytest.approx(k_off, abs=1e-10)
    assert float(terms["loss/kl_online"]) == pytest.approx(k_on, abs=1e-10)
    assert float(loss) == pytest.approx(want, abs=1e-10)
    only_ce, t = drrnet_loss(T(A), torch.tensor([0]), None, None, None, 0.5, 0.5, 2.0, 1.0)
    assert float(only_ce) == pytest.approx(ce(A, 0)) and float(t["loss/kl_offline"]) == 0.0
    same, _ = drrnet_loss(T(A), torch.tensor([0]), T(A), T(A), None, 0.5, 0.5, 2.0, 1.0)
    assert float(same) == pytest.approx(ce(A, 0), abs=1e-12)  # teacher = student: both KL terms vanish


def _progress(step=0, total=100, acc=None):
    return Progress(step=step, total_steps=total, epoch=1, total_epochs=1, metrics={"accuracy": acc} if acc else {})


def test_awa_perf_weights_are_reverse_changing() -> None:
    awa = AdaptiveWeightAssignment(AWAConfig(mode="perf", momentum=0.5, eps=0.05))
    assert awa.weights(_progress()) == (0.95, pytest.approx(0.05))  # nothing seen yet: trust the offline teacher
    pairs = []
    for acc in (0.2, 0.5, 0.8, 0.9):
        awa.update(acc, 1.0)
        pairs.append(awa.weights(_progress()))
    w_off, w_on = zip(*pairs)
    assert all(a + b == pytest.approx(1.0) for a, b in pairs)
    assert list(w_on) == sorted(w_on) and list(w_off) == sorted(w_off, reverse=True)
    assert w_on[1] == pytest.approx(0.5 * 0.2 + 0.5 * 0.5)  # EMA with momentum 0.5
    awa.update(1.0, 0.1)
    awa.update(1.0, 0.1)
    assert awa.weights(_progress())[1] <= 0.95  # clipped to [eps, 1 - eps]


def test_awa_val_loss_linear_fixed_modes() -> None:
    val = AdaptiveWeightAssignment(AWAConfig(mode="perf", source="val", eps=0.0))
    assert val.weights(_progress(acc=0.7)) == (pytest.approx(0.3), pytest.approx(0.7))
    loss = AdaptiveWeightAssignment(AWAConfig(mode="loss", momentum=0.0, eps=0.0))
    assert loss.weights(_progress()) == (0.5, 0.5)
    loss.update(0.1, 2.0)
    loss.update(0.5, 0.5)  # w_off = 0.5 / (0.5 + 2.0)
    assert loss.weights(_progress()) == (pytest.approx(0.2), pytest.approx(0.8))
    lin = AdaptiveWeightAssignment(AWAConfig(mode="linear", eps=0.1))
    assert lin.weights(_progress(step=30)) == (pytest.approx(0.7), pytest.approx(0.3))
    assert lin.weights(_progress(step=100))[1] == pytest.approx(0.9)
    fixed = AdaptiveWeightAssignment(AWAConfig(mode="fixed", fixed_on=0.25))
    assert fixed.weights(_progress(step=99)) == (0.75, 0.25)


def test_awa_state_round_trips() -> None:
    a = AdaptiveWeightAssignment(AWAConfig(mode="loss"))
    for acc, c in ((0.1, 2.0), (0.4, 1.2), (0.6, 0.9)):
        a.update(acc, c)
    b = AdaptiveWeightAssignment(AWAConfig(mode="loss"))
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.weights(_progress()) == a.weights(_progress())


def test_last_iteration_cache_matches_by_index() -> None:
    cache = LastIterationLogits()
    mask, _ = cache.lookup(torch.tensor([1, 2]), 3)
    assert not mask.any()
    cache.store(torch.tensor([5, 7, 9]), T(A, B, C))
    mask, logits = cache.lookup(torch.tensor([9, 4, 5]), 3)
    assert mask.tolist() == [True, False, True]
    assert torch.equal(logits[0], T(C)[0].float()) and torch.equal(logits[2], T(A)[0].float())
    other = LastIterationLogits()
    other.load_state_dict(cache.state_dict())
    assert torch.equal(other.lookup(torch.tensor([7]), 3)[1], cache.lookup(torch.tensor([7]), 3)[1])


def test_overlapping_order_repeats_half_of_the_last_batch() -> None:
    n, gb = 50, 8
    for epoch in (1, 2, 3):
        order = overlapping_order(n, seed=0, epoch=epoch, global_batch=gb)
        assert len(order) == n // gb * gb
        batches = [order[i : i + gb] for i in range(0, len(order), gb)]
        for prev, cur in zip(batches, batches[1:]):
            assert cur[: gb // 2] == prev[gb // 2 :]
    e1, e2 = overlapping_order(n, 0, 1, gb), overlapping_order(n, 0, 2, gb)
    assert e2[: gb // 2] == e1[-gb // 2 :]  # the two engine epochs of one permutation continue each other
    new = set(e1[gb // 2 :: 1]) | set(e2)
    assert len(new) >= n // (gb // 2) * (gb // 2) - gb  # together they bring (almost) every chip
    assert overlapping_order(n, 0, 1, gb) == e1  # a pure function of (seed, epoch)


def test_paired_order_pairs_chips_of_the_same_class() -> None:
    labels = np.array([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    order = paired_order(labels, seed=3, epoch=2, global_batch=4)
    assert len(order) == 8
    n = len(labels)
    for code in order:
        anchor, pair = divmod(code, n)
        assert labels[anchor] == labels[pair]
    excl = paired_order(labels, 3, 2, 4, exclude_self=True)
    assert all(a != p for a, p in (divmod(c, n) for c in excl))
    assert paired_order(labels, 3, 2, 4) == order
