"""Retrieval metrics (pure torch; the official code uses ir_measures on a top-10 TREC run).

Rankings sort by score, ties broken by collection order (a stable sort), so a query whose scores
are all equal (an all-zero sparse vector) ranks the collection in order and is not flattered.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..engine.io import atomic_write_text

CUTOFFS = (1, 5, 10)


def top_k(scores: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """(N_q, k) indices of the k best columns per row, stable on ties (chunked to bound memory)."""
    k = min(k, scores.shape[1])
    out = [
        torch.sort(scores[s : s + chunk].float(), dim=1, descending=True, stable=True).indices[:, :k]
        for s in range(0, scores.shape[0], chunk)
    ]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def first_relevant_rank(top: Tensor, relevant: Tensor) -> Tensor:
    """0-based rank of the first relevant item in each top-k row (k if none is in the top k).

    ``relevant``: bool (N_q, k), relevant[q, j] = top[q, j] is relevant for q.
    """
    k = top.shape[1]
    ranks = torch.where(relevant, torch.arange(k).expand_as(relevant), torch.full_like(top, k))
    return ranks.min(dim=1).values


def rank_metrics(ranks: Tensor, prefix: str = "") -> dict[str, float]:
    """R@1/5/10 and MRR@10 (in [0, 1]) from 0-based first-relevant ranks (>= 10 = not in the run)."""
    ranks = ranks.float()
    out = {f"{prefix}R@{k}": float((ranks < k).float().mean()) for k in CUTOFFS}
    out[f"{prefix}MRR@10"] = float(torch.where(ranks < 10, 1.0 / (ranks + 1), torch.zeros_like(ranks)).mean())
    return out


def t2i_metrics(scores: Tensor, gold_image: Tensor, k: int = 10) -> tuple[dict[str, float], Tensor]:
    """Text->image: rows = captions, columns = images, one relevant image per caption."""
    top = top_k(scores, k)
    ranks = first_relevant_rank(top, top == gold_image.unsqueeze(1))
    return rank_metrics(ranks), top


def i2t_metrics(scores: Tensor, gold_image: Tensor, k: int = 10) -> dict[str, float]:
    """Image->text (ours, not in the paper): rows = images, every caption of the image is relevant."""
    top = top_k(scores, k)
    image_ids = torch.arange(scores.shape[0]).unsqueeze(1)
    return rank_metrics(first_relevant_rank(top, gold_image[top] == image_ids))


def flops(z_q: Tensor, z_d: Tensor) -> float:
    """Expected multiply-adds of one query-document sparse product (D2S / SPLADE definition):
    sum_v P(z_qv != 0) P(z_dv != 0), the fractions taken over the query and document sets."""
    return float(((z_q != 0).float().mean(0) * (z_d != 0).float().mean(0)).sum())


def flops_official(z_q: Tensor, z_d: Tensor) -> float:
    """The CIKM code's `finetune_from_proj` figure: it sums the sparse score matrix instead of
    counting co-occurring non-zeros (a bug; kept behind eval.flops=official for comparison only).
    Normalised here by N_q N_d, i.e. the mean sparse score (the code's normalisation is unknown)."""
    return float((z_q.sum(0) * z_d.sum(0)).sum() / (z_q.shape[0] * z_d.shape[0]))


def mean_nnz(z: Tensor) -> float:
    return float((z != 0).sum(dim=1).float().mean())


def truncate_top_terms(z: Tensor, k: int) -> Tensor:
    """Keep the k largest weights of each vector (official eval option `truncate_topk`)."""
    if k <= 0 or k >= z.shape[1]:
        return z
    vals, idx = z.topk(k, dim=1)
    return torch.zeros_like(z).scatter_(1, idx, vals)


def write_trec_run(
    path: Path, query_ids: list[str], doc_ids: list[str], top: Tensor, scores: Tensor, run_name: str
) -> Path:
    """TREC run: `qid Q0 docid rank score run_name`, rank starting at 1."""
    lines = []
    for q, row in enumerate(top.tolist()):
        for r, d in enumerate(row):
            lines.append(f"{query_ids[q]} Q0 {doc_ids[d]} {r + 1} {float(scores[q, d]):.6f} {run_name}\n")
    return atomic_write_text(path, "".join(lines))


def write_qrels(path: Path, query_ids: list[str], doc_ids: list[str], gold: Tensor) -> Path:
    return atomic_write_text(path, "".join(f"{q} 0 {doc_ids[int(g)]} 1\n" for q, g in zip(query_ids, gold.tolist())))


# -- per-query results and the paper's significance test --------------------------------------------------
PER_QUERY_METRICS = ("R@1", "R@5", "R@10", "MRR@10")


def gold_ranks(top: Tensor, gold: Tensor) -> Tensor:
    """0-based rank of each query's gold item in its top-k row (k when absent; -1 pads are never gold)."""
    return first_relevant_rank(top, top == gold.unsqueeze(1))


def per_query_values(ranks: Tensor) -> dict[str, list[float]]:
    """R@1/5/10 (0/1) and RR@10 of every query from its 0-based gold rank (the means are rank_metrics)."""
    r = ranks.float()
    out = {f"R@{k}": (r < k).float().tolist() for k in CUTOFFS}
    out["MRR@10"] = torch.where(r < 10, 1.0 / (r + 1), torch.zeros_like(r)).tolist()
    return out


def write_per_query(path: Path, query_ids: list[str], ranks_by_score: dict[str, Tensor], depth: int = 10) -> Path:
    """TSV, one line per (query, score): `query_id score rank R@1 R@5 R@10 MRR@10`; rank is the
    1-based rank of the gold image, empty when it is not in the run of ``depth`` items (per query,
    MRR@10 is RR@10)."""
    lines = ["query_id\tscore\trank\t" + "\t".join(PER_QUERY_METRICS) + "\n"]
    for name, ranks in ranks_by_score.items():
        values = per_query_values(ranks)
        for q, qid in enumerate(query_ids):
            rank = int(ranks[q])
            cells = [f"{values[m][q]:.6g}" for m in PER_QUERY_METRICS]
            lines.append(f"{qid}\t{name}\t{rank + 1 if rank < depth else ''}\t" + "\t".join(cells) + "\n")
    return atomic_write_text(path, "".join(lines))


def read_per_query(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{score: {query_id: {metric: value}}} from a per_query.tsv."""
    from ..engine.errors import SkdError

    if not path.is_file():
        raise SkdError("no per-query results (run `skd retrieval eval` on this run first)", path)
    rows = path.read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t") if rows else []
    if header[:3] != ["query_id", "score", "rank"] or not set(PER_QUERY_METRICS) <= set(header):
        raise SkdError("not a per-query results file (header query_id, score, rank, R@1, ...)", path)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for n, line in enumerate(rows[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise SkdError(f"line {n} has {len(cells)} fields, expected {len(header)}", path)
        out.setdefault(cells[1], {})[cells[0]] = {m: float(cells[header.index(m)]) for m in PER_QUERY_METRICS}
    return out


def paired_significance(a: list[float], b: list[float], n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired t-test (scipy.stats.ttest_rel; the paper's test) and Fisher's randomisation test
    (scipy.stats.permutation_test swapping the two systems' values within each query, two-sided, on
    the mean difference; exact when 2^n <= n_resamples) of system a against system b."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = x - y
    result = {"n": int(len(x)), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "mean_diff": float(diff.mean())}
    if len(x) < 2 or not np.any(diff):  # identical systems: no evidence of a difference
        result.update({"t_test_p": 1.0, "randomisation_p": 1.0, "t": 0.0})
        return result
    t = stats.ttest_rel(x, y)
    perm = stats.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u - v, axis=axis),
        vectorized=True,
        permutation_type="samples",
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    t_stat = float(t.statistic)
    result.update(
        {
            "t": t_stat if np.isfinite(t_stat) else 0.0,
            "t_test_p": float(t.pvalue) if np.isfinite(t.pvalue) else 1.0,
            "randomisation_p": float(perm.pvalue),
        }
    )
    return result


def compare_per_query(ours: dict, theirs: dict, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Every score and metric of two runs' per-query results, paired by query id."""
    from ..engine.errors import SkdError

    out: dict = {}
    for score in ours:
        if score not in theirs:
            continue
        qa, qb = ours[score], theirs[score]
        if set(qa) != set(qb):
            raise SkdError(
                f"score {score!r}: the two runs were evaluated on different queries "
                f"({len(qa)} vs {len(qb)}, {len(set(qa) & set(qb))} shared)"
            )
        qids = sorted(qa)
        out[score] = {
            m: paired_significance([qa[q][m] for q in qids], [qb[q][m] for q in qids], n_resamples, seed)
            for m in PER_QUERY_METRICS
        }
    if not out:
        raise SkdError("the two runs share no score name")
    return out
