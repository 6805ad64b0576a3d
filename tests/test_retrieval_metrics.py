"""Ranking metrics, FLOPs and the TREC writer against hand-worked toys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skdcli.retrieval.metrics import (
    flops,
    flops_official,
    i2t_metrics,
    mean_nnz,
    rank_metrics,
    t2i_metrics,
    top_k,
    truncate_top_terms,
    write_trec_run,
)


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


# -- issue 15, item 12: an independent implementation, per-query results, the significance test ---------------
def test_metrics_agree_with_ir_measures_on_the_written_trec_files(tmp_path: Path) -> None:
    import ir_measures  # a test dependency (pyproject [test])
    from ir_measures import RR, R

    from skdcli.retrieval.metrics import gold_ranks, per_query_values, write_qrels

    g = torch.Generator().manual_seed(3)
    scores = torch.rand(40, 30, generator=g)  # distinct scores: trec_eval's tie order plays no part
    gold = torch.randint(0, 30, (40,), generator=g)
    qids, dids = [f"q{i}" for i in range(40)], [f"d{j}" for j in range(30)]
    ours, top = t2i_metrics(scores, gold)
    write_trec_run(tmp_path / "run.trec", qids, dids, top, scores, "skd")
    write_qrels(tmp_path / "qrels.txt", qids, dids, gold)
    qrels = list(ir_measures.read_trec_qrels(str(tmp_path / "qrels.txt")))
    run = list(ir_measures.read_trec_run(str(tmp_path / "run.trec")))
    theirs = ir_measures.calc_aggregate([R @ 1, R @ 5, R @ 10, RR @ 10], qrels, run)
    assert {
        "R@1": theirs[R @ 1],
        "R@5": theirs[R @ 5],
        "R@10": theirs[R @ 10],
        "MRR@10": theirs[RR @ 10],
    } == pytest.approx(ours, abs=1e-6)
    assert 0 < ours["R@1"] < ours["R@10"] < 1  # a run that exercises every branch
    per_query = per_query_values(gold_ranks(top, gold))
    for m in ir_measures.iter_calc([RR @ 10, R @ 5], qrels, run):
        ours_name = "MRR@10" if m.measure == RR @ 10 else "R@5"
        assert per_query[ours_name][qids.index(m.query_id)] == pytest.approx(m.value)


def test_per_query_file_round_trip(tmp_path: Path) -> None:
    from skdcli.retrieval.metrics import read_per_query, write_per_query

    ranks = {"sparse": torch.tensor([0, 3, 10]), "dense": torch.tensor([1, 0, 12])}
    path = write_per_query(tmp_path / "per_query.tsv", ["a", "b", "c"], ranks, depth=10)
    lines = path.read_text().splitlines()
    assert lines[0] == "query_id\tscore\trank\tR@1\tR@5\tR@10\tMRR@10"
    assert lines[2] == "b\tsparse\t4\t0\t1\t1\t0.25" and lines[3] == "c\tsparse\t\t0\t0\t0\t0"
    back = read_per_query(path)
    assert back["dense"]["a"] == {"R@1": 0.0, "R@5": 1.0, "R@10": 1.0, "MRR@10": 0.5}
    from skdcli.engine.errors import SkdError

    (tmp_path / "bad.tsv").write_text("id\tx\n")
    with pytest.raises(SkdError, match="not a per-query results file"):
        read_per_query(tmp_path / "bad.tsv")


def test_paired_t_test_and_randomisation_test_by_hand() -> None:
    import math

    from skdcli.retrieval.metrics import compare_per_query, paired_significance

    a, b = [1.0, 0.0, 1.0, 1.0, 0.5], [0.0, 0.0, 1.0, 0.0, 0.0]
    d = [x - y for x, y in zip(a, b)]  # 1, 0, 0, 1, 0.5
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t = mean / (sd / math.sqrt(5))
    got = paired_significance(a, b)
    assert got["mean_diff"] == pytest.approx(0.5) and got["t"] == pytest.approx(t)
    # two-sided p of t with 4 degrees of freedom: closed form for even df, 1 - F(|t|) = 1/2 (1 - x (1 + (1-x^2)/2))
    x = t / math.sqrt(t * t + 4)
    assert got["t_test_p"] == pytest.approx(1 - x * (1 + (1 - x * x) / 2), rel=1e-6)
    # Fisher randomisation, exact over the 2^5 swaps: only flipping no non-zero difference (or all of them)
    # reaches |sum| = 2.5 of the 8 sign patterns of (1, 1, 0.5): p = 2/8
    assert got["randomisation_p"] == pytest.approx(0.25)
    assert paired_significance(a, a)["t_test_p"] == 1.0
    ours = {"sparse": {f"q{i}": {"R@1": v, "R@5": v, "R@10": v, "MRR@10": v} for i, v in enumerate(a)}}
    theirs = {"sparse": {f"q{i}": {"R@1": v, "R@5": v, "R@10": v, "MRR@10": v} for i, v in enumerate(b)}}
    assert compare_per_query(ours, theirs)["sparse"]["MRR@10"]["randomisation_p"] == pytest.approx(0.25)
    from skdcli.engine.errors import SkdError

    with pytest.raises(SkdError, match="different queries"):
        compare_per_query(ours, {"sparse": {"q0": ours["sparse"]["q0"]}})
