"""Embedding-space self-KD loss against hand-computed values (skdcli/nlp_embed/loss.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skdcli.nlp_embed.config import KDConfig
from skdcli.nlp_embed.loss import (
    NeighbourTable,
    build_neighbour_table,
    build_random_table,
    embedding_skd_loss,
    perturb,
    similarity,
    soft_targets,
)

# Four words in 2-D: 0 and 1 point the same way, 2 is orthogonal, 3 is opposite to 0.
W = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def kd(**kw) -> KDConfig:
    return KDConfig(
        **{"method": "skd", "sim": "dot", "temperature": 1.0, "topk": 2, "include_gold": True, "beta": 0.5, **kw}
    )


def test_similarities_by_hand() -> None:
    c = W[:1]
    assert similarity(c, W, "dot").tolist() == [[1.0, 2.0, 0.0, -1.0]]
    assert similarity(c, W, "cos").tolist() == [[1.0, 1.0, 0.0, -1.0]]
    assert similarity(c, W, "neg_l2")[0].tolist() == pytest.approx([0.0, -1.0, -math.sqrt(2), -2.0])
    # the (N, K, d) form gives the same numbers for a chosen candidate set
    assert similarity(c, W[[2, 1]].unsqueeze(0), "dot").tolist() == [[0.0, 2.0]]


def test_neighbour_table_by_hand() -> None:
    # dot: the nearest other words of 0 are 1 (2.0) then 2 (0.0)
    table = build_neighbour_table(W, 3, "dot", include_gold=True)
    assert table[0].tolist() == [0, 1, 2]
    assert table.shape == (4, 3) and (table[:, 0] == torch.arange(4)).all()
    no_gold = build_neighbour_table(W, 2, "cos", include_gold=False)
    assert no_gold[0].tolist() == [1, 2] and no_gold[3, 0] == 2  # word 3's 2nd is a tie of 0 and 1
    assert not (no_gold == torch.arange(4).unsqueeze(1)).any()  # a word is never its own neighbour
    # computed in chunks: the same table as one block
    assert torch.equal(
        build_neighbour_table(W, 3, "neg_l2", True, chunk=1), build_neighbour_table(W, 3, "neg_l2", True)
    )
    with pytest.raises(ValueError, match="kd.topk"):
        build_neighbour_table(W, 6, "dot", True)


def test_soft_targets_by_hand_and_are_distributions() -> None:
    table = build_neighbour_table(W, 2, "dot", include_gold=True)  # row 0 = [0, 1]
    cand, q = soft_targets(W, torch.tensor([0]), table, "dot", temperature=1.0)
    assert cand.tolist() == [[0, 1]]
    e1, e2 = math.exp(1.0), math.exp(2.0)
    assert q[0].tolist() == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2)])
    gold = torch.tensor([0, 1, 2, 3, 2])
    for t in (table, None):
        for sim in ("dot", "cos", "neg_l2"):
            _, q = soft_targets(torch.randn(4, 3), gold, t, sim, 0.3)
            assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones(len(gold)))
    # full vocabulary without the gold word: zero mass on it
    _, q = soft_targets(W, gold, None, "dot", 1.0, include_gold=False)
    assert q.gather(1, gold.unsqueeze(1)).abs().max() == 0


def test_loss_by_hand() -> None:
    logits = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    targets, mask = torch.tensor([[0]]), torch.tensor([[True]])
    total, logs = embedding_skd_loss(logits, targets, mask, W, 0.25, kd(), build_neighbour_table(W, 2, "dot", True))
    log_z = math.log(3 + math.e)
    ce = log_z - 0.0  # -log p_0
    e1, e2 = math.exp(1.0), math.exp(2.0)
    q0, q1 = e1 / (e1 + e2), e2 / (e1 + e2)
    soft = q0 * (log_z - 0.0) + q1 * (log_z - 1.0)
    assert float(logs["loss/ce"]) == pytest.approx(ce)
    assert float(logs["loss/soft"]) == pytest.approx(soft)
    assert float(total) == pytest.approx(0.75 * ce + 0.25 * soft)
    assert float(logs["target/gold_mass"]) == pytest.approx(q0)


def test_beta_zero_is_cross_entropy_bit_for_bit() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.bool)
    ce = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1))
    for method in ("skd", "noise"):
        total, _ = embedding_skd_loss(
            logits, targets, mask, W, 0.0, kd(method=method), build_neighbour_table(W, 2, "dot", True)
        )
        assert torch.equal(total, ce)
    baseline, _ = embedding_skd_loss(logits, targets, mask, W, 0.7, kd(method="ce"))
    assert torch.equal(baseline, ce)


def test_k1_with_gold_reduces_to_cross_entropy() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 6, 4), torch.randint(0, 4, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    total, logs = embedding_skd_loss(
        logits, targets, mask, W, 0.6, kd(topk=1), build_neighbour_table(W, 1, "dot", True)
    )
    assert float(logs["target/gold_mass"]) == 1.0
    assert torch.allclose(total, F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1)))


def test_full_vocabulary_equals_topk_over_all_words() -> None:
    torch.manual_seed(2)
    weight = torch.randn(6, 3)
    logits, targets = torch.randn(2, 4, 6), torch.randint(0, 6, (2, 4))
    mask = torch.ones(2, 4, dtype=torch.bool)
    full, _ = embedding_skd_loss(logits, targets, mask, weight, 0.5, kd(topk=0, sim="cos", temperature=0.5))
    table = build_neighbour_table(weight, 6, "cos", True)
    topk, _ = embedding_skd_loss(logits, targets, mask, weight, 0.5, kd(topk=6, sim="cos", temperature=0.5), table)
    assert torch.allclose(full, topk, atol=1e-6)


def test_padding_never_contributes() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 4, requires_grad=True)
    targets = torch.randint(0, 4, (2, 5))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    table = build_neighbour_table(W, 2, "dot", True)
    for method in ("skd", "ce", "ls"):
        cfg = kd(method=method)
        a, _ = embedding_skd_loss(logits, targets, mask, W, 0.5, cfg, table)
        garbage_logits = logits.detach().clone()
        garbage_logits[1, 2:] = 1e4
        garbage_targets = targets.clone()
        garbage_targets[1, 2:] = 3
        b, _ = embedding_skd_loss(garbage_logits, garbage_targets, mask, W, 0.5, cfg, table)
        assert torch.allclose(a, b)
        (grad,) = torch.autograd.grad(a, logits)
        assert grad[1, 2:].abs().max() == 0
    # all padding: a zero loss, not nan
    empty, _ = embedding_skd_loss(logits, targets, torch.zeros(2, 5, dtype=torch.bool), W, 0.5, kd(), table)
    assert float(empty.detach()) == 0.0


def test_targets_are_detached_from_the_embedding() -> None:
    weight = W.clone().requires_grad_(True)
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    total, _ = embedding_skd_loss(
        logits, torch.tensor([[0]]), torch.tensor([[True]]), weight, 1.0, kd(), build_neighbour_table(W, 2, "dot", True)
    )
    total.backward()
    assert weight.grad is None and logits.grad is not None


def test_label_smoothing_baseline_is_torch_label_smoothing() -> None:
    torch.manual_seed(4)
    logits, targets = torch.randn(2, 3, 4), torch.randint(0, 4, (2, 3))
    total, _ = embedding_skd_loss(
        logits, targets, torch.ones(2, 3, dtype=torch.bool), W, 0.5, kd(method="ls", label_smoothing=0.1)
    )
    assert torch.allclose(total, F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1), label_smoothing=0.1))


def test_noise_control_perturbs_with_matched_norm() -> None:
    torch.manual_seed(5)
    center = torch.randn(7, 3)
    moved = perturb(center, 1.0)
    assert torch.allclose((moved - center).norm(dim=-1), center.norm(dim=-1), atol=1e-5)
    table = build_neighbour_table(W, 3, "dot", True)
    gold = torch.tensor([0, 1, 2])
    _, clean = soft_targets(W, gold, table, "dot", 1.0)
    _, noisy = soft_targets(W, gold, table, "dot", 1.0, noise_scale=1.0)
    assert not torch.allclose(clean, noisy) and torch.allclose(noisy.sum(-1), torch.ones(3))


def test_neighbour_table_refresh_cadence_and_state() -> None:
    nt = NeighbourTable(2, "dot", True, refresh_every=3)
    first = nt.get(W, 0)
    # the embedding moves; the cached table must not until step 3
    assert nt.get(-W, 2) is first and nt.rebuilds == 1
    assert nt.get(-W, 3) is not first and nt.rebuilds == 2
    restored = NeighbourTable(2, "dot", True, refresh_every=3)
    restored.load_state_dict(nt.state_dict())
    assert torch.equal(restored.get(W, 5), nt.table) and restored.rebuilds == 0
    # never-target ids are never neighbours
    excl = build_neighbour_table(W, 3, "dot", True, exclude=(1,))
    assert not (excl[:, 1:] == 1).any()


def test_per_word_and_per_token_soft_targets_agree() -> None:
    # a batch with more tokens than words takes the one-row-per-word path; it must give the same q~
    torch.manual_seed(0)
    W = torch.randn(6, 4)
    for sim in ("dot", "cos", "neg_l2"):
        table = build_neighbour_table(W, 3, sim, include_gold=True)
        many = torch.randint(0, 6, (20,))  # 20 tokens > 6 words: per-word path
        cand, q = soft_targets(W, many, table, sim, 0.5)
        for n, word in enumerate(many.tolist()):
            _, q_one = soft_targets(W, torch.tensor([word]), table, sim, 0.5)  # 1 token < 6 words: per-token path
            assert torch.equal(cand[n], table[word])
            assert torch.allclose(q[n], q_one[0], atol=1e-6)


def test_random_control_draws_k_random_neighbours() -> None:
    # the nearest-neighbour table of word 0 is [0, 1, ...]; the random one draws the others uniformly
    g = torch.Generator().manual_seed(0)
    table = build_random_table(50, 4, include_gold=True, generator=g, exclude=(7,))
    assert table.shape == (50, 4) and (table[:, 0] == torch.arange(50)).all()
    for row in table.tolist():
        assert len(set(row)) == 4 and 7 not in row[1:]  # distinct, never the excluded id, never itself twice
    # over many rows every other word shows up about equally often: not the nearest ones
    counts = torch.bincount(table[:, 1:].reshape(-1), minlength=50).float()
    assert counts[7] == 0 and counts.max() < 12  # 150 draws over 49 words: ~3 each
    again = build_random_table(50, 4, True, torch.Generator().manual_seed(0), exclude=(7,), chunk=7)
    assert torch.equal(again, table)  # chunking changes nothing for a given generator
    # the table signal: seeded by (seed, refresh step), the same on every rank and after a resume
    signal = NeighbourTable(3, "dot", True, refresh_every=5, choice="random", seed=1)
    first = signal.get(W.repeat(3, 1), 0).clone()
    assert torch.equal(NeighbourTable(3, "dot", True, 5, choice="random", seed=1).get(W.repeat(3, 1), 0), first)
    assert not torch.equal(NeighbourTable(3, "dot", True, 5, choice="random", seed=2).get(W.repeat(3, 1), 0), first)
    assert torch.equal(signal.get(W.repeat(3, 1), 4), first) and signal.rebuilds == 1


def test_random_control_loss_is_skd_on_the_random_table() -> None:
    # same weighting (similarity softmax over the candidates), only the candidates differ
    logits = torch.randn(1, 3, 4)
    targets, mask = torch.tensor([[0, 2, 3]]), torch.ones(1, 3, dtype=torch.bool)
    table = torch.tensor([[0, 3], [1, 2], [2, 0], [3, 1]])  # not the nearest words
    rand, logs = embedding_skd_loss(logits, targets, mask, W, 0.5, kd(method="random"), table)
    skd, _ = embedding_skd_loss(logits, targets, mask, W, 0.5, kd(method="skd"), table)
    assert float(rand) == float(skd)
    # by hand for token 0: candidates [0, 3], dot similarities (1, -1) -> q = softmax(1, -1)
    log_p = F.log_softmax(logits[0], -1)
    q = torch.softmax(torch.tensor([1.0, -1.0]), 0)
    soft = [-(q * log_p[0, [0, 3]]).sum()]
    q2 = torch.softmax(torch.tensor([W[2] @ W[2], W[2] @ W[0]]), 0)
    q3 = torch.softmax(torch.tensor([W[3] @ W[3], W[3] @ W[1]]), 0)
    soft += [-(q2 * log_p[1, [2, 0]]).sum(), -(q3 * log_p[2, [3, 1]]).sum()]
    ce = -log_p[torch.arange(3), targets[0]].mean()
    assert float(rand) == pytest.approx(float(0.5 * ce + 0.5 * torch.stack(soft).mean()), rel=1e-6)
    assert float(logs["loss/soft"]) == pytest.approx(float(torch.stack(soft).mean()), rel=1e-6)
