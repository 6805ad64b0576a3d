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
    out = [torch.sort(scores[s:s + chunk].float(), dim=1, descending=True, stable=True).indices[:, :k]
           for s in range(0, scores.shape[0], chunk)]
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


def write_trec_run(path: Path, query_ids: list[str], doc_ids: list[str], top: Tensor, scores: Tensor,
                   run_name: str) -> Path:
    """TREC run: `qid Q0 docid rank score run_name`, rank starting at 1."""
    lines = []
    for q, row in enumerate(top.tolist()):
        for r, d in enumerate(row):
            lines.append(f"{query_ids[q]} Q0 {doc_ids[d]} {r + 1} {float(scores[q, d]):.6f} {run_name}\n")
    return atomic_write_text(path, "".join(lines))


def write_qrels(path: Path, query_ids: list[str], doc_ids: list[str], gold: Tensor) -> Path:
    return atomic_write_text(path, "".join(f"{q} 0 {doc_ids[int(g)]} 1\n" for q, g in zip(query_ids, gold.tolist())))
