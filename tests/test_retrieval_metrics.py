"""Ranking metrics, FLOPs and the TREC writer against hand-worked toys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skdcli.retrieval.metrics import (flops, flops_official, i2t_metrics, mean_nnz, rank_metrics, t2i_metrics,
                                      top_k, truncate_top_terms, write_trec_run)


def test_recall_and_mrr_on_a_hand_ranked_run() -> None:
    # 4 queries over 12 images; the gold image sits at rank 1, 3, 7 and nowhere in the top 10.
    scores = torch.zeros(4, 12)
    order = torch.arange(12, 0, -1, dtype=torch.float)  # image j gets score 12 - j: rank = j + 1
    scores[:] = order
    gold = torch.tensor([0, 2, 6, 11])
    metrics, top = t2i_metrics(scores, gold)
    assert top[0].tolist() == list(range(10))
    assert metrics["R@1"] == pytest.approx(1 / 4)
    assert metrics["R@5"] == pytest.approx(2 / 4)
    assert metrics["R@10"] == pytest.approx(3 / 4)
    assert metrics["MRR@10"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 0) / 4)


def test_ties_do_not_flatter_an_all_zero_query() -> None:
    scores = torch.zeros(2, 20)
    metrics, _ = t2i_metrics(scores, torch.tensor([15, 0]))  # stable order: image 15 at rank 16, image 0 at rank 1
    assert metrics["R@1"] == 0.5 and metrics["R@10"] == 0.5


def test_image_to_text_counts_any_caption_of_the_image() -> None:
    # 2 images, 4 captions (0, 1 -> image 0; 2, 3 -> image 1). rows = images.
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.8, 0.1, 0.2, 0.3]])
    gold = torch.tensor([0, 0, 1, 1])
    m = i2t_metrics(scores, gold)
    # image 0: best caption (1) is relevant -> rank 1; image 1: order 0, 3 -> first relevant at rank 2
    assert m["R@1"] == 0.5 and m["R@5"] == 1.0 and m["MRR@10"] == pytest.approx((1 + 1 / 2) / 2)


def test_rank_metrics_from_ranks() -> None:
    m = rank_metrics(torch.tensor([0, 4, 9, 10, 50]))
    assert m == pytest.approx({"R@1": 0.2, "R@5": 0.4, "R@10": 0.6, "MRR@10": (1 + 1 / 5 + 1 / 10) / 5})


def test_flops_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    zq = torch.relu(torch.randn(7, 11, generator=g)) * (torch.rand(7, 11, generator=g) < 0.4)
    zd = torch.relu(torch.randn(9, 11, generator=g)) * (torch.rand(9, 11, generator=g) < 0.5)
    brute = sum(int(zq[q, v] != 0 and zd[d, v] != 0) for q in range(7) for d in range(9) for v in range(11)) / (7 * 9)
    assert flops(zq, zd) == pytest.approx(brute)
    assert flops_official(zq, zd) == pytest.approx(float((zq @ zd.t()).mean()), rel=1e-5)
    assert mean_nnz(zq) == pytest.approx(float((zq != 0).sum()) / 7)


def test_truncate_keeps_the_largest_terms() -> None:
    z = torch.tensor([[0.1, 0.5, 0.0, 0.3], [1.0, 0.2, 0.3, 0.0]])
    assert torch.equal(truncate_top_terms(z, 2), torch.tensor([[0.0, 0.5, 0.0, 0.3], [1.0, 0.0, 0.3, 0.0]]))
    assert truncate_top_terms(z, 0) is z


def test_trec_run_file(tmp_path: Path) -> None:
    scores = torch.tensor([[0.2, 0.9, 0.1]])
    top = top_k(scores, 3)
    path = write_trec_run(tmp_path / "r.trec", ["q7"], ["a", "b", "c"], top, scores, "skd-sparse")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q7", "Q0", "b", "1", "0.900000", "skd-sparse"]
    assert [ln.split()[2] for ln in lines] == ["b", "a", "c"]
