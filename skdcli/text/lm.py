"""Word-level language models: an LSTM LM (Zaremba-style) and a small decoder-only Transformer.

Both map ids (B, T) to next-token logits (B, T, V) and expose ``output_embedding`` (V, d): the
matrix right below the softmax, which embedding-space self-KD reads its soft targets from.
``tie_weights`` shares it with the input embedding (Press & Wolf / Inan et al.); the LSTM then
projects its hidden state to the embedding size when they differ.

Export-friendly: forward is a pure function of the ids (no hidden state carried between calls).
The Transformer exports whole sequences (dynamic batch and length); the LSTM exports as one
recurrent step with explicit state (``LSTMStep``). ``sample`` runs the same loop on an eager
model or a loaded export program through ``SequenceScorer`` / ``RecurrentScorer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LMConfig:
    arch: str = "lstm"  # lstm | transformer
    d_embed: int = 64  # word-embedding size (= output-embedding size)
    d_hidden: int = 64  # LSTM hidden size / Transformer width (must equal d_embed for the transformer)
    num_layers: int = 1
    num_heads: int = 2  # transformer
    ff_dim: int = 128  # transformer
    max_len: int = 256  # transformer: learned positions (the longest input, exported programs too)
    dropout: float = 0.2
    tie_weights: bool = True


class LSTMLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: LMConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(cfg.d_embed, cfg.d_hidden, cfg.num_layers, batch_first=True,
                           dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        # a tied output embedding lives in the input-embedding space: project the hidden state there
        self.proj = nn.Linear(cfg.d_hidden, cfg.d_embed) if cfg.tie_weights and cfg.d_hidden != cfg.d_embed else None
        self.out = nn.Linear(cfg.d_embed if self.proj is not None else cfg.d_hidden, vocab_size)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    @property
    def output_embedding(self) -> torch.Tensor:
        return self.out.weight

    def forward(self, ids: torch.Tensor, embed_noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids)
        if embed_noise is not None:
            x = x + embed_noise
        h, _ = self.rnn(self.drop(x))
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)
        return self.out(h)


class TransformerLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: LMConfig):
        super().__init__()
        if cfg.d_hidden != cfg.d_embed:
            raise ValueError("the transformer LM uses one width: set model.d_hidden = model.d_embed")
        self.max_len = cfg.max_len
        self.embed = nn.Embedding(vocab_size, cfg.d_embed)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_embed)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.d_embed, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_embed)
        self.out = nn.Linear(cfg.d_embed, vocab_size)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight

    @property
    def output_embedding(self) -> torch.Tensor:
        return self.out.weight

    def forward(self, ids: torch.Tensor, embed_noise: torch.Tensor | None = None) -> torch.Tensor:
        t = ids.shape[1]
        x = self.embed(ids)
        if embed_noise is not None:
            x = x + embed_noise
        x = self.drop(x + self.pos(torch.arange(t, device=ids.device)))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device, dtype=x.dtype)
        h = self.blocks(x, mask=mask, is_causal=True)
        return self.out(self.norm(h))


def build_lm(vocab_size: int, cfg: LMConfig) -> nn.Module:
    if cfg.arch == "lstm":
        return LSTMLM(vocab_size, cfg)
    if cfg.arch == "transformer":
        return TransformerLM(vocab_size, cfg)
    raise ValueError(f"unknown LM architecture '{cfg.arch}' (lstm, transformer)")


class LSTMStep(nn.Module):
    """One recurrent step of an ``LSTMLM`` with explicit state, the form the LSTM exports in:
    ``(ids (B, 1), h (L, B, H), c (L, B, H)) -> (logits (B, 1, V), h, c)``. (torch.export
    specialises nn.LSTM's time dimension, so a whole-sequence LSTM program would accept only the
    example's length; a step program serves any length and is what sampling needs anyway.)"""

    def __init__(self, lm: LSTMLM):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        y, (h, c) = self.lm.rnn(self.lm.embed(ids), (h, c))
        if self.lm.proj is not None:
            y = self.lm.proj(y)
        return self.lm.out(y), h, c


class SequenceScorer:
    """Next-word logits from a whole-sequence model (``ids (1, T) -> logits (1, T, V)``),
    re-reading the last ``max_context`` ids each time (0 = all)."""

    def __init__(self, model, max_context: int = 0):
        self.model, self.max_context = model, max_context

    def __call__(self, ids: list[int]) -> torch.Tensor:
        ctx = ids[-self.max_context:] if self.max_context > 0 else ids
        return self.model(torch.tensor([ctx], dtype=torch.long))[0, -1]


class RecurrentScorer:
    """Next-word logits from an ``LSTMStep`` (eager or exported), feeding only the new ids."""

    def __init__(self, step, num_layers: int, hidden: int):
        self.step, self.seen = step, 0
        self.h = torch.zeros(num_layers, 1, hidden)
        self.c = torch.zeros(num_layers, 1, hidden)

    def __call__(self, ids: list[int]) -> torch.Tensor:
        for i in ids[self.seen:]:
            logits, self.h, self.c = self.step(torch.tensor([[i]], dtype=torch.long), self.h, self.c)
        self.seen = len(ids)
        return logits[0, -1]


@torch.no_grad()
def sample(next_logits, prompt: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
           stop_id: int | None = None, generator: torch.Generator | None = None) -> list[int]:
    """Continue ``prompt`` (ids, non-empty) token by token; ``next_logits(ids) -> (V,)`` is a
    ``SequenceScorer`` or ``RecurrentScorer`` (eager model or exported program alike).

    temperature 0 = greedy; ``top_k`` > 0 samples among the k most likely words only; generation
    stops after ``stop_id`` (e.g. ``<eos>``).
    """
    ids = list(prompt)
    for _ in range(max_new_tokens):
        logits = next_logits(ids).float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if 0 < top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(F.softmax(logits, -1), 1, generator=generator))
        ids.append(nxt)
        if stop_id is not None and nxt == stop_id:
            break
    return ids[len(prompt):]
