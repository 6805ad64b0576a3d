"""Embedding-space self-KD (Hahn & Choi 2019), our reading of it (recipes/nlp_embed/README.md §3, §5):

    L = (1 - b) · CE(e_y, p) + b · CE(q~, p),      q~_j ∝ exp(sim(w_y, w_j) / T),  j in N_K(y)

W = the model's output-embedding matrix (the "word embedding space right below the softmax"),
detached for the target. N_K(y) = the gold word's K nearest words under ``sim``, read from a
cached neighbour table rebuilt every ``refresh_every`` steps (the O(V²d) search is the
approximation's cost); the similarities themselves are recomputed every step from the current W
for just those K words, so a step costs O(N·K·d) extra. K = 0 uses the whole vocabulary.

All losses average over valid (unmasked) target tokens; padding never contributes.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.losses import label_smoothing_cross_entropy
from ..engine.teachers import TeacherSignal
from .config import KDConfig


def similarity(center: Tensor, others: Tensor, kind: str) -> Tensor:
    """sim(center_n, others_{n,k}): center (N, d), others (N, K, d) -> (N, K); or others (V, d) -> (N, V)."""
    if kind == "cos":
        center, others = F.normalize(center, dim=-1), F.normalize(others, dim=-1)
    if kind in ("dot", "cos"):
        return torch.einsum("nd,nkd->nk", center, others) if others.dim() == 3 else center @ others.T
    if kind == "neg_l2":
        diff = center.unsqueeze(-2) - (others if others.dim() == 3 else others.unsqueeze(0))
        return -diff.norm(dim=-1)
    raise ValueError(f"unknown similarity '{kind}' (dot, cos, neg_l2)")


@torch.no_grad()
def build_neighbour_table(
    weight: Tensor, k: int, sim: str, include_gold: bool, chunk: int = 2048, exclude: tuple[int, ...] = ()
) -> Tensor:
    """(V, k) word ids: row v = v itself first (``include_gold``) then its nearest other words.
    ``exclude``: ids never chosen as a neighbour (tokens that are never targets, e.g. <pad>, <s>).

    Rows are computed ``chunk`` words at a time so the (chunk, V) similarity block, not (V, V),
    bounds the memory (33k x 33k floats would be 4.4 GB)."""
    weight = weight.detach().float()
    vocab = weight.shape[0]
    others = k - 1 if include_gold else k
    if not 0 <= others <= vocab - 1 - len(exclude):
        raise ValueError(
            f"kd.topk={k} needs at most {vocab - 1 - len(exclude) + include_gold} words (vocabulary {vocab})"
        )
    rows = []
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(start + chunk, vocab), device=weight.device)
        scores = similarity(weight[ids], weight, sim)
        scores[torch.arange(len(ids)), ids] = float("-inf")  # a word is not its own neighbour
        if exclude:
            scores[:, list(exclude)] = float("-inf")
        near = scores.topk(others, dim=-1).indices if others else ids.new_zeros(len(ids), 0)
        rows.append(torch.cat([ids.unsqueeze(1), near], 1) if include_gold else near)
    return torch.cat(rows)


@torch.no_grad()
def build_random_table(
    vocab: int, k: int, include_gold: bool, generator: torch.Generator, chunk: int = 2048, exclude: tuple[int, ...] = ()
) -> Tensor:
    """(V, k) word ids like ``build_neighbour_table``, but row v's other words are drawn uniformly at
    random without replacement (never v itself, never ``exclude``): the ``random`` control."""
    others = k - 1 if include_gold else k
    if not 0 <= others <= vocab - 1 - len(exclude):
        raise ValueError(
            f"kd.topk={k} needs at most {vocab - 1 - len(exclude) + include_gold} words (vocabulary {vocab})"
        )
    rows = []
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(start + chunk, vocab))
        scores = torch.rand(len(ids), vocab, generator=generator)  # a random ranking of the vocabulary per row
        scores[torch.arange(len(ids)), ids] = -1.0
        if exclude:
            scores[:, list(exclude)] = -1.0
        near = scores.topk(others, dim=-1).indices if others else ids.new_zeros(len(ids), 0)
        rows.append(torch.cat([ids.unsqueeze(1), near], 1) if include_gold else near)
    return torch.cat(rows)


class NeighbourTable(TeacherSignal):
    """The cached top-K table as an engine teacher signal, so a resumed run reuses the exact table
    an uninterrupted run would have (it goes into every checkpoint).

    ``choice="random"`` (the ``random`` control) draws each word's K neighbours at random instead,
    from a generator seeded by (seed, step): every DDP rank draws the same table, and the draw
    depends on the run's seed and the refresh step only."""

    def __init__(
        self,
        k: int,
        sim: str,
        include_gold: bool,
        refresh_every: int,
        exclude: tuple[int, ...] = (),
        choice: str = "nearest",
        seed: int = 0,
    ):
        if choice not in ("nearest", "random"):
            raise ValueError(f"choice must be 'nearest' or 'random', got {choice!r}")
        self.k, self.sim, self.include_gold, self.refresh_every = k, sim, include_gold, refresh_every
        self.exclude, self.choice, self.seed = exclude, choice, seed
        self.table: Tensor | None = None
        self.built_at = -1
        self.rebuilds = 0

    def get(self, weight: Tensor, step: int) -> Tensor:
        """The table for optimizer step ``step``, rebuilt from ``weight`` (V, d) when it is due."""
        if self.table is None or step >= self.built_at + self.refresh_every:
            if self.choice == "random":
                # a tuple of ints hashes the same in every process (str hashing is salted)
                g = torch.Generator().manual_seed(hash((self.seed, step, -1)) & 0x7FFF_FFFF)
                self.table = build_random_table(weight.shape[0], self.k, self.include_gold, g, exclude=self.exclude).to(
                    weight.device
                )
            else:
                self.table = build_neighbour_table(weight, self.k, self.sim, self.include_gold, exclude=self.exclude)
            self.built_at, self.rebuilds = step, self.rebuilds + 1
        return self.table

    def state_dict(self) -> dict[str, Any]:
        return {} if self.table is None else {"table": self.table.cpu(), "built_at": self.built_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.table = state["table"] if state else None
        self.built_at = int(state["built_at"]) if state else -1

    def to(self, device: torch.device) -> Tensor | None:
        if self.table is not None and self.table.device != device:
            self.table = self.table.to(device)
        return self.table


def perturb(center: Tensor, scale: float) -> Tensor:
    """center + isotropic Gaussian noise whose norm is ``scale`` times the center's (row-wise)."""
    noise = torch.randn_like(center)
    noise = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12) * center.norm(dim=-1, keepdim=True)
    return center + scale * noise


def soft_targets(
    weight: Tensor,
    gold: Tensor,
    table: Tensor | None,
    sim: str,
    temperature: float,
    include_gold: bool = True,
    noise_scale: float = 0.0,
) -> tuple[Tensor | None, Tensor]:
    """(candidate ids (N, K) or None for the full vocabulary, q~ (N, K) or (N, V)); rows sum to 1.

    ``weight`` is detached here: the target never sends gradient into the embeddings."""
    weight = weight.detach().float()
    center = weight[gold]
    if noise_scale > 0:
        center = perturb(center, noise_scale)
    if sim == "cos":  # normalise the V rows once instead of the N·K gathered copies
        weight, center, sim = F.normalize(weight, dim=-1), F.normalize(center, dim=-1), "dot"
    if table is None:
        scores = similarity(center, weight, sim) / temperature
        if not include_gold:
            scores = scores.scatter(1, gold.unsqueeze(1), float("-inf"))
        return None, scores.softmax(-1)
    if noise_scale == 0 and weight.shape[0] <= gold.numel():
        # Every occurrence of a word has the same q~ row, so when the batch holds more tokens than
        # the vocabulary has words, one row per word (V·K·d) is cheaper than one per token (N·K·d).
        # The choice depends on shapes only: no host-device sync (torch.unique would need one).
        q_vocab = (similarity(weight, weight[table], sim) / temperature).softmax(-1)
        return table[gold], q_vocab[gold]
    cand = table[gold]
    scores = similarity(center, weight[cand], sim) / temperature
    return cand, scores.softmax(-1)


def embedding_skd_loss(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor,
    weight: Tensor,
    beta: float,
    kd: KDConfig,
    table: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """Total loss and its logged parts for kd.method in {skd, noise, random, ce, ls, input_noise}
    (``random`` is ``skd`` on a table of randomly drawn neighbours).

    logits (B, T, V), targets (B, T), mask (B, T) bool (True = counts). ``table``: the neighbour
    table (kd.topk > 0) or None (full vocabulary). ``input_noise`` is applied in the forward pass
    (``compute_loss``); its loss is plain CE.
    """
    flat_logits, gold = logits[mask].float(), targets[mask]
    if kd.method == "ls":
        loss = label_smoothing_cross_entropy(flat_logits, gold, kd.label_smoothing)
        return loss, {"loss/ls": loss}
    if not gold.numel():  # nothing to predict (all padding): a zero that keeps the graph
        zero = flat_logits.sum() * 0.0
        return zero, {"loss/ce": zero, "weight/beta": beta}
    if kd.method in ("ce", "input_noise") or beta == 0.0:
        ce = F.cross_entropy(flat_logits, gold)
        return ce, {"loss/ce": ce, "weight/beta": beta}
    noise = kd.noise_scale if kd.method == "noise" else 0.0
    cand, q = soft_targets(weight, gold, table, kd.sim, kd.temperature, kd.include_gold, noise)
    log_p = F.log_softmax(flat_logits, -1)  # once, for both terms
    if cand is None:
        ce = -log_p.gather(1, gold.unsqueeze(1)).mean()
        soft = -(q * log_p).sum(-1).mean()
    else:
        # one gather for both terms (each gather's backward writes a dense (N, V) gradient):
        # with include_gold the gold word already is candidate 0
        both = log_p.gather(1, cand if kd.include_gold else torch.cat([gold.unsqueeze(1), cand], 1))
        ce = -both[:, 0].mean()
        soft = -(q * both[:, int(not kd.include_gold) :]).sum(-1).mean()
    total = (1.0 - beta) * ce + beta * soft
    # mass q~ puts on the gold word: 1 = one-hot target, lower = more spread to neighbours
    if cand is None:
        gold_mass = q.gather(1, gold.unsqueeze(1)).mean()
    else:
        gold_mass = q[:, 0].mean() if kd.include_gold else 0.0
    return total, {"loss/ce": ce, "loss/soft": soft, "weight/beta": beta, "target/gold_mass": gold_mass}
