"""The Seismic index against exhaustive scipy scoring, and the exact scorer against a dense product."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from skdcli.retrieval.config import IndexConfig
from skdcli.retrieval.index import ExactIndex, LoadedIndex, SeismicSearcher, build_index, query_terms, to_csr


def random_sparse(n: int, v: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.gamma(1.5, 0.5, size=(n, v)).astype(np.float32)
    z[rng.random((n, v)) > density] = 0
    return z


def test_exact_index_equals_a_dense_product() -> None:
    docs, q = random_sparse(300, 50, 0.1, 0), random_sparse(1, 50, 0.3, 1)[0]
    exact = ExactIndex(to_csr(docs))
    terms, values = query_terms(q)
    np.testing.assert_allclose(exact.scores(terms, values), docs @ q, rtol=1e-5, atol=1e-6)
    top, scores = exact.search(terms, values, 10)
    assert top.tolist() == np.lexsort((np.arange(300), -(docs @ q)))[:10].tolist()


def test_seismic_without_pruning_equals_exhaustive_scoring(tmp_path: Path, capfd) -> None:
    docs = random_sparse(400, 60, 0.15, 2)
    # no pruning: every posting kept (n_postings >> list length), summaries keep all energy,
    # every query term used, heap factor 1: the index must return the exhaustive top 10.
    cfg = IndexConfig(n_postings=100_000, summary_energy=1.0, query_cut=60, heap_factor=1.0, doc_cut=60)
    manifest = build_index(tmp_path, [f"img{i}" for i in range(400)], docs, cfg, {})
    assert "Building" not in capfd.readouterr().out  # Seismic's logs go to stderr, never stdout
    index = LoadedIndex(tmp_path)
    assert manifest["documents"] == 400 and index.seismic is not None
    for seed in range(10):
        q = random_sparse(1, 60, 0.3, 100 + seed)[0]
        got, got_scores, engine = index.search(q, 10)
        want, want_scores, _ = index.search(q, 10, exact=True)
        assert engine == "seismic"
        assert set(got.tolist()) == set(want.tolist())
        # Seismic stores values at reduced precision: scores agree to ~1e-3 relative
        np.testing.assert_allclose(np.sort(got_scores), np.sort(want_scores), rtol=5e-3)


def test_index_of_all_zero_vectors_is_refused(tmp_path: Path) -> None:
    from skdcli.engine.errors import SkdError

    with pytest.raises(SkdError, match="all zero"):
        SeismicSearcher.build(sp.csr_matrix((3, 5), dtype=np.float32), IndexConfig())


def test_query_without_terms_is_refused(tmp_path: Path) -> None:
    from skdcli.engine.errors import SkdError

    build_index(tmp_path, ["a", "b"], random_sparse(2, 5, 1.0, 3), IndexConfig(engine="exact"), {})
    with pytest.raises(SkdError, match="all zero"):
        LoadedIndex(tmp_path).search(np.zeros(5, dtype=np.float32), 5)


def test_every_query_through_the_index_against_brute_force(tmp_path: Path) -> None:
    """Issue 15, item 10: R@k / MRR@10 of the index's answers, next to the exact scorer's."""
    import torch

    from skdcli.retrieval.index import evaluate_through_index
    from skdcli.retrieval.metrics import rank_metrics

    docs = random_sparse(60, 40, 0.2, 5)
    doc_ids = [f"img{i}" for i in range(60)]
    cfg = IndexConfig(n_postings=100_000, summary_energy=1.0, query_cut=40, heap_factor=1.0, doc_cut=40)
    build_index(tmp_path, doc_ids, docs, cfg, {"split": "test"})
    queries = random_sparse(30, 40, 0.3, 6)
    queries[7] = 0  # a query with no term: the index cannot answer it, it counts as a miss
    rng = np.random.default_rng(7)
    gold = rng.integers(0, 60, size=30)
    result = evaluate_through_index(LoadedIndex(tmp_path), queries, [doc_ids[g] for g in gold], k=10)
    # brute force: rank of the gold image by exhaustive scoring, ties by document order
    brute = []
    for q, g in zip(queries, gold):
        s = docs @ q
        order = np.lexsort((np.arange(60), -s))
        brute.append(10 if not q.any() else int(np.flatnonzero(order == g)[0]))
    want = rank_metrics(torch.tensor(brute))
    assert result["exact"]["t2i"] == pytest.approx(want)
    assert result["index"]["t2i"] == pytest.approx(want)  # no pruning: the index answers as exhaustive scoring
    assert result["overlap_with_exact@k"] == pytest.approx(1.0) and result["queries_without_terms"] == 1
    lat = result["index"]["latency"]
    assert lat["queries"] == 29 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert result["engine"] == "seismic" and result["documents"] == 60
    from skdcli.engine.errors import SkdError

    with pytest.raises(SkdError, match="not in the index"):
        evaluate_through_index(LoadedIndex(tmp_path), queries[:1], ["elsewhere"], k=10)
