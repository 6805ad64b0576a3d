"""Inverted index over sparse image vectors: Seismic (pyseismic-lsr) plus an exact scipy scorer.

- ``SeismicIndex``: the learned-sparse-retrieval engine (Bruch et al., SIGIR 2024). Posting lists
  are pruned to ~``n_postings`` entries per term, cut into blocks with summaries, and searched
  approximately; values are stored at reduced precision.
- ``ExactIndex``: term-at-a-time over a CSC matrix (scipy): touch only the query terms' posting
  lists, accumulate, arg-partition the top k. Exact; the validator for Seismic.

Seismic's Rust code prints build logs on the process' stdout; they are sent to stderr here so
``--json`` output stays one object.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..engine.errors import SkdError
from ..engine.io import atomic_write_json, read_json
from .config import IndexConfig

SEISMIC_FILE = "images"  # Seismic appends .index.seismic
VECTORS_FILE = "vectors.npz"
MANIFEST_FILE = "index.json"


@contextlib.contextmanager
def stdout_to_stderr():
    """Point file descriptor 1 at stderr for the duration (native code writing to stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def to_csr(z: np.ndarray) -> sp.csr_matrix:
    m = sp.csr_matrix(np.asarray(z, dtype=np.float32))
    m.eliminate_zeros()
    m.sort_indices()
    return m


class ExactIndex:
    """Exhaustive sparse scoring on posting lists (CSC column slices)."""

    def __init__(self, docs: sp.csr_matrix):
        self.csc = docs.tocsc()
        self.n_docs = docs.shape[0]

    def scores(self, q_terms: np.ndarray, q_values: np.ndarray) -> np.ndarray:
        return np.asarray(self.csc[:, q_terms] @ q_values.astype(np.float32)).ravel()

    def search(self, q_terms: np.ndarray, q_values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scores(q_terms, q_values)
        k = min(k, self.n_docs)
        top = np.argpartition(-s, k - 1)[:k] if k < self.n_docs else np.arange(self.n_docs)
        top = top[np.lexsort((top, -s[top]))]  # by score, ties by document order
        return top, s[top]

    def nbytes(self) -> int:
        return self.csc.data.nbytes + self.csc.indices.nbytes + self.csc.indptr.nbytes


class SeismicSearcher:
    """pyseismic-lsr over documents named by their row number; components are term ids."""

    def __init__(self, index):
        import seismic

        self.index = index
        self.string_type = seismic.get_seismic_string()

    @classmethod
    def build(cls, docs: sp.csr_matrix, cfg: IndexConfig, threads: int = 0) -> "SeismicSearcher":
        from seismic import SeismicDataset, SeismicIndex

        rows = np.diff(docs.indptr) > 0
        if not rows.any():
            raise SkdError("every document vector is all zero: nothing to index (is the sparse head trained?)")
        dataset = SeismicDataset()
        with stdout_to_stderr():
            dataset.add_documents_by_id(
                [str(i) for i in range(docs.shape[0])],
                docs.indices.astype(np.int64),
                docs.data.astype(np.float32),
                docs.indptr.astype(np.int64),
            )
            index = SeismicIndex.build_from_dataset(
                dataset,
                n_postings=cfg.n_postings,
                centroid_fraction=cfg.centroid_fraction,
                min_cluster_size=cfg.min_cluster_size,
                summary_energy=cfg.summary_energy,
                max_fraction=cfg.max_fraction,
                doc_cut=cfg.doc_cut,
                num_threads=threads,
            )
        return cls(index)

    @classmethod
    def load(cls, path: Path) -> "SeismicSearcher":
        from seismic import SeismicIndex

        with stdout_to_stderr():
            return cls(SeismicIndex.load(str(path)))

    def save(self, stem: Path) -> Path:
        with stdout_to_stderr():
            self.index.save(str(stem))
        return stem.with_name(stem.name + ".index.seismic")

    def _query(self, q_terms: np.ndarray) -> np.ndarray:
        return np.array([str(int(t)) for t in q_terms], dtype=self.string_type)

    def search(
        self, q_terms: np.ndarray, q_values: np.ndarray, k: int, query_cut: int, heap_factor: float
    ) -> tuple[np.ndarray, np.ndarray]:
        res = self.index.search(
            "q", self._query(q_terms), q_values.astype(np.float32), k=k, query_cut=query_cut, heap_factor=heap_factor
        )
        return np.array([int(d) for _, _, d in res], dtype=np.int64), np.array([s for _, s, _ in res], dtype=np.float32)

    def batch_search(
        self, queries: list[tuple[np.ndarray, np.ndarray]], k: int, query_cut: int, heap_factor: float, threads: int = 0
    ) -> list[np.ndarray]:
        res = self.index.batch_search(
            np.array([str(i) for i in range(len(queries))], dtype=self.string_type),
            [self._query(t) for t, _ in queries],
            [v.astype(np.float32) for _, v in queries],
            k=k,
            query_cut=query_cut,
            heap_factor=heap_factor,
            num_threads=threads,
        )
        return [np.array([int(d) for _, _, d in r], dtype=np.int64) for r in res]


def query_terms(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(z)
    return nz.astype(np.int64), z[nz].astype(np.float32)


def build_index(folder: Path, doc_ids: list[str], z_docs: np.ndarray, cfg: IndexConfig, extra: dict) -> dict:
    """Write the exact vectors (always) and, for engine=seismic, the Seismic index, plus a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = to_csr(z_docs)
    sp.save_npz(folder / VECTORS_FILE, docs, compressed=False)
    t0 = time.perf_counter()
    files = [VECTORS_FILE]
    if cfg.engine == "seismic":
        searcher = SeismicSearcher.build(docs, cfg)
        files.append(searcher.save(folder / SEISMIC_FILE).name)
    build_seconds = time.perf_counter() - t0
    manifest = {
        "engine": cfg.engine,
        "documents": len(doc_ids),
        "doc_ids": doc_ids,
        "nnz": int(docs.nnz),
        "mean_nnz": round(docs.nnz / max(len(doc_ids), 1), 3),
        "vocab_size": int(z_docs.shape[1]),
        "build_seconds": round(build_seconds, 4),
        "params": asdict(cfg),
        "files": files,
        **extra,
    }
    manifest["bytes"] = {f: (folder / f).stat().st_size for f in files}
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    return manifest


class LoadedIndex:
    def __init__(self, folder: Path):
        if not (folder / MANIFEST_FILE).is_file():
            raise SkdError("no index here (build it with `skd retrieval index --run-dir R`)", folder)
        self.folder = folder
        self.manifest = read_json(folder / MANIFEST_FILE)
        self.doc_ids: list[str] = self.manifest["doc_ids"]
        self.docs = sp.load_npz(folder / VECTORS_FILE)  # plain arrays, no pickle
        self.exact = ExactIndex(self.docs)
        self.seismic = (
            SeismicSearcher.load(folder / f"{SEISMIC_FILE}.index.seismic")
            if self.manifest["engine"] == "seismic"
            else None
        )

    def search(
        self,
        z_query: np.ndarray,
        k: int,
        exact: bool = False,
        query_cut: int | None = None,
        heap_factor: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, str]:
        terms, values = query_terms(z_query)
        if terms.size == 0:
            raise SkdError("the query's sparse vector is all zero: no term to look up")
        p = self.manifest["params"]
        if exact or self.seismic is None:
            top, scores = self.exact.search(terms, values, k)
            return top, scores, "exact"
        top, scores = self.seismic.search(
            terms, values, k, query_cut or p["query_cut"], heap_factor if heap_factor is not None else p["heap_factor"]
        )
        return top, scores, "seismic"


def answer_queries(index: LoadedIndex, z_queries: np.ndarray, k: int, exact: bool) -> tuple[np.ndarray, list[float]]:
    """Every query answered one at a time, as a user's search is: (N, k) document positions
    (-1 pads a short answer, e.g. a query with no term, which the index cannot answer) and the
    per-query search latencies in seconds (queries with no term excluded)."""
    top = np.full((len(z_queries), k), -1, dtype=np.int64)
    latencies = []
    p = index.manifest["params"]
    for q, z in enumerate(z_queries):
        terms, values = query_terms(z)
        if terms.size == 0:
            continue
        t0 = time.perf_counter()
        if exact or index.seismic is None:
            got, _ = index.exact.search(terms, values, k)
        else:
            got, _ = index.seismic.search(terms, values, k, p["query_cut"], p["heap_factor"])
        latencies.append(time.perf_counter() - t0)
        top[q, : len(got)] = got[:k]
    return top, latencies


def latency_summary(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"queries": 0}
    return {
        "queries": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def evaluate_through_index(index: LoadedIndex, z_queries: np.ndarray, gold_ids: list[str], k: int = 10) -> dict:
    """R@1/5/10 + MRR@10 of the queries answered by the index (Seismic) and by the exact scorer over
    the same stored vectors, their top-k overlap, and search latency percentiles of both.

    ``gold_ids``: each query's relevant image id; every one must be in the index."""
    import torch

    from .metrics import gold_ranks, rank_metrics

    pos = {d: n for n, d in enumerate(index.doc_ids)}
    missing = [g for g in gold_ids if g not in pos]
    if missing:
        raise SkdError(
            f"{len(missing)} gold image(s) (e.g. {missing[0]}) are not in the index; build it over the "
            "evaluated split (`skd retrieval index --split SPLIT --overwrite`)",
            index.folder,
        )
    gold = torch.tensor([pos[g] for g in gold_ids], dtype=torch.long)
    out: dict = {
        "engine": "seismic" if index.seismic is not None else "exact",
        "documents": len(index.doc_ids),
        "queries": len(gold_ids),
        "queries_without_terms": int((np.abs(z_queries).sum(1) == 0).sum()),
        "params": {n: index.manifest["params"][n] for n in ("query_cut", "heap_factor", "n_postings")},
    }
    tops = {}
    for name, exact in (("index", False), ("exact", True)):
        top, lat = answer_queries(index, z_queries, k, exact)
        tops[name] = top
        ranks = gold_ranks(torch.from_numpy(top), gold)
        out[name] = {"t2i": rank_metrics(ranks), "latency": latency_summary(lat), "_ranks": ranks}
    a, b = tops["index"], tops["exact"]
    # share of the exact top k the index returns, over the queries the exact scorer answered
    overlap = [
        len(set(x[x >= 0].tolist()) & set(y[y >= 0].tolist())) / int((y >= 0).sum())
        for x, y in zip(a, b)
        if (y >= 0).any()
    ]
    out["overlap_with_exact@k"] = float(np.mean(overlap)) if overlap else 1.0
    out["k"] = k
    return out
