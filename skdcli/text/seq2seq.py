"""Transformer encoder-decoder for translation, with greedy and beam search.

Two block layouts (``Seq2SeqConfig.arch``):

- ``fairseq`` (default): fairseq's ``transformer`` / ``transformer_iwslt_de_en`` as fairseq builds it
  (fairseq ``fairseq/modules/transformer_layer.py``, ``multihead_attention.py``,
  ``models/transformer/transformer_{encoder,decoder}.py``): post-LayerNorm blocks
  (``x = LN(x + dropout(sublayer(x)))``, no final encoder/decoder LayerNorm), dropout on the scaled
  embeddings + positions, after each attention and after the feed-forward output, and
  ``activation_dropout`` after the ReLU inside the feed-forward (0 in fairseq's defaults); fairseq's
  init: embeddings N(0, d^-1/2) with the padding row zeroed, q/k/v projections Xavier-uniform with
  gain 1/sqrt(2), the attention output projection Xavier-uniform with zero bias, the feed-forward
  layers PyTorch's default ``nn.Linear`` init, an untied output projection N(0, d^-1/2) without bias;
  sinusoidal positions numbered from ``padding_idx + 1`` = 2 (fairseq's dictionary puts <pad> at 1).
- ``prenorm``: the layout this file had before (nanoGPT-style pre-LayerNorm blocks with final
  LayerNorms, PyTorch default init, the feed-forward's inner dropout = ``dropout``, positions from 0).

Embedding sharing is independent of the layout: ``tie_output`` ties the decoder's input embedding to
the output projection (fairseq ``--share-decoder-input-output-embed``, the IWSLT14 recipe's),
``share_embeddings`` also shares it with the encoder (``--share-all-embeddings``; the vocabulary is a
joint sentencepiece model either way). The layout before issue 14 is ``arch=prenorm`` with
``share_embeddings=true``.

Export-friendly: ``forward(src_ids, tgt_ids) -> logits (B, T, V)`` takes only token ids; padding
masks are derived from ``PAD_ID`` inside, there is no data-dependent Python control flow, and the
positional table is a buffer. ``torch.export`` exports it with dynamic batch and lengths.

Decoding works on any ``next_log_probs(src, prefix) -> (N, V)`` function, so the same greedy and
beam search run on the eager model (``Seq2SeqTransformer.scorer()``, which encodes the source once)
and on an exported program (``program_scorer``, which recomputes everything per step).
Beam search length penalty is fairseq's: a finished hypothesis scores sum(log p) / len**lenpen,
len counting </s>.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.config import choice
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

ARCHS = ("fairseq", "prenorm")
FAIRSEQ_POSITION_OFFSET = 2  # fairseq numbers positions from padding_idx + 1, with padding_idx = 1


@dataclass
class Seq2SeqConfig:
    """The model block of a recipe config (nlg-smooth ``model``, nlp-embed ``nmt``)."""

    # fairseq: transformer_iwslt_de_en's layout (post-LN, fairseq init) | prenorm (module doc)
    arch: str = choice("fairseq", ARCHS)
    d_model: int = 64
    num_heads: int = 4
    ff_dim: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1  # fairseq --dropout
    attention_dropout: float = 0.0  # fairseq --attention-dropout (on the attention weights)
    activation_dropout: float = 0.0  # fairseq --activation-dropout (after the FFN's ReLU); arch=prenorm uses `dropout`
    max_positions: int = 258  # longest sequence the model takes, <s>/</s> included (prep --max-tokens + 2)
    share_embeddings: bool = False  # encoder and decoder share one table (fairseq --share-all-embeddings)
    tie_output: bool = True  # output projection = decoder input embedding (--share-decoder-input-output-embed)

    def sizes(self, vocab_size: int) -> "Seq2SeqSizes":
        return Seq2SeqSizes(**{**asdict(self), "vocab_size": vocab_size})


@dataclass
class Seq2SeqSizes(Seq2SeqConfig):
    """A ``Seq2SeqConfig`` plus the vocabulary size: everything the model's shape depends on."""

    vocab_size: int = 0


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """fairseq/tensor2tensor table: sin on the first half of the channels, cos on the second."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(n, dtype=torch.float32).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, d - 2 * half))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, fairseq_init: bool = False):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by num_heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        if fairseq_init:  # fairseq MultiheadAttention.reset_parameters (q/k/v/out of one width)
            for proj in (self.q, self.k, self.v):
                nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
            nn.init.xavier_uniform_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, memory: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        b, t, d = x.shape
        split = lambda y: y.view(b, y.shape[1], self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(
            split(self.q(x)),
            split(self.k(memory)),
            split(self.v(memory)),
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Sequential):
    """fc1 -> ReLU -> dropout(inner) -> fc2 (PyTorch's default Linear init, as fairseq's build_fc1/fc2)."""

    def __init__(self, d: int, ff: int, inner_dropout: float):
        super().__init__(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(inner_dropout), nn.Linear(ff, d))


def _ffn_inner_dropout(s: Seq2SeqSizes) -> float:
    return s.activation_dropout if s.arch == "fairseq" else s.dropout


class EncoderLayer(nn.Module):
    def __init__(self, s: Seq2SeqSizes):
        super().__init__()
        self.post_norm = s.arch == "fairseq"
        self.norm1, self.norm2 = nn.LayerNorm(s.d_model), nn.LayerNorm(s.d_model)
        self.attn = Attention(s.d_model, s.num_heads, s.attention_dropout, fairseq_init=self.post_norm)
        self.ff = FeedForward(s.d_model, s.ff_dim, _ffn_inner_dropout(s))
        self.drop = nn.Dropout(s.dropout)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        if self.post_norm:  # fairseq TransformerEncoderLayerBase with normalize_before=False
            x = self.norm1(x + self.drop(self.attn(x, x, src_mask)))
            return self.norm2(x + self.drop(self.ff(x)))
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, src_mask))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, s: Seq2SeqSizes):
        super().__init__()
        self.post_norm = s.arch == "fairseq"
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(s.d_model) for _ in range(3))
        self.self_attn = Attention(s.d_model, s.num_heads, s.attention_dropout, fairseq_init=self.post_norm)
        self.cross_attn = Attention(s.d_model, s.num_heads, s.attention_dropout, fairseq_init=self.post_norm)
        self.ff = FeedForward(s.d_model, s.ff_dim, _ffn_inner_dropout(s))
        self.drop = nn.Dropout(s.dropout)

    def forward(self, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        # Target padding sits after </s>: causal masking alone keeps real positions from seeing it.
        if self.post_norm:  # fairseq TransformerDecoderLayerBase with normalize_before=False
            y = self.norm1(y + self.drop(self.self_attn(y, y, causal=True)))
            y = self.norm2(y + self.drop(self.cross_attn(y, memory, src_mask)))
            return self.norm3(y + self.drop(self.ff(y)))
        h = self.norm1(y)
        y = y + self.drop(self.self_attn(h, h, causal=True))
        y = y + self.drop(self.cross_attn(self.norm2(y), memory, src_mask))
        return y + self.drop(self.ff(self.norm3(y)))


class Seq2SeqTransformer(nn.Module):
    def __init__(self, sizes: Seq2SeqSizes):
        super().__init__()
        if sizes.arch not in ARCHS:
            raise ValueError(f"unknown arch {sizes.arch!r} ({', '.join(ARCHS)})")
        self.sizes = s = sizes
        fairseq = s.arch == "fairseq"
        # fairseq's Embedding init, N(0, d^-1/2) with the padding row zeroed, drawn in the order this model
        # always drew it (both tables built, then each initialised: the shared table twice), so that
        # arch=prenorm with share_embeddings reproduces the pre-issue-14 model's weights for a seed
        self.embed = nn.Embedding(s.vocab_size, s.d_model, padding_idx=PAD_ID)  # encoder's (shared: also decoder's)
        self.tgt_embed = self.embed if s.share_embeddings else nn.Embedding(s.vocab_size, s.d_model, padding_idx=PAD_ID)
        for table in (self.embed, self.tgt_embed):
            nn.init.normal_(table.weight, std=s.d_model**-0.5)
            with torch.no_grad():
                table.weight[PAD_ID].zero_()
        self.position_offset = FAIRSEQ_POSITION_OFFSET if fairseq else 0
        self.register_buffer(
            "positions", sinusoidal_positions(s.max_positions + self.position_offset, s.d_model), persistent=False
        )
        self.drop = nn.Dropout(s.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(s) for _ in range(s.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(s) for _ in range(s.decoder_layers))
        # fairseq's post-LN stacks have no final LayerNorm (it exists only with normalize_before)
        self.enc_norm = None if fairseq else nn.LayerNorm(s.d_model)
        self.dec_norm = None if fairseq else nn.LayerNorm(s.d_model)
        self.output = None if s.tie_output else nn.Linear(s.d_model, s.vocab_size, bias=False)
        if self.output is not None and fairseq:
            nn.init.normal_(self.output.weight, std=s.d_model**-0.5)

    def _embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        start = self.position_offset
        x = table(ids) * math.sqrt(self.sizes.d_model) + self.positions[start : start + ids.shape[1]]
        return self.drop(x)

    def encode(self, src_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, d), attention mask (B, 1, 1, S), True = attend)."""
        src_mask = (src_ids != PAD_ID)[:, None, None, :]
        x = self._embed(self.embed, src_ids)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return (x if self.enc_norm is None else self.enc_norm(x)), src_mask

    def decode(self, memory: Tensor, src_mask: Tensor, tgt_ids: Tensor) -> Tensor:
        """Logits (B, T, V) for each target prefix position."""
        y = self._embed(self.tgt_embed, tgt_ids)
        for layer in self.decoder:
            y = layer(y, memory, src_mask)
        if self.dec_norm is not None:
            y = self.dec_norm(y)
        return F.linear(y, self.tgt_embed.weight) if self.output is None else self.output(y)

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        """Teacher-forced logits: ``tgt_ids`` starts with <s>; output position t predicts token t+1."""
        memory, src_mask = self.encode(src_ids)
        return self.decode(memory, src_mask, tgt_ids)

    def scorer(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``next_log_probs(src, prefix)`` that encodes each source tensor once (decoding is per step)."""
        cache: dict = {}

        def next_log_probs(src: Tensor, prefix: Tensor) -> Tensor:
            if cache.get("src") is not src:
                cache["src"], cache["enc"] = src, self.encode(src)
            memory, src_mask = cache["enc"]
            return F.log_softmax(self.decode(memory, src_mask, prefix)[:, -1].float(), dim=-1)

        return next_log_probs


class TranslationProgram(nn.Module):
    """What ``export`` saves: (src_ids, tgt_ids) -> log-probabilities (B, T, V) of the next token."""

    def __init__(self, model: Seq2SeqTransformer):
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, tgt_ids: Tensor) -> Tensor:
        return F.log_softmax(self.model(src_ids, tgt_ids).float(), dim=-1)


def program_scorer(program: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """``next_log_probs`` over an exported ``TranslationProgram`` (recomputes the encoder each step)."""
    return lambda src, prefix: program(src, prefix)[:, -1]


def pad_batch(seqs: list[list[int]], pad: int = PAD_ID) -> Tensor:
    width = max((len(s) for s in seqs), default=0)
    return torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(len(seqs), width)


def _finish(tokens: list[int]) -> list[int]:
    return tokens[: tokens.index(EOS_ID)] if EOS_ID in tokens else tokens


@torch.no_grad()
def greedy_search(next_log_probs: Callable[[Tensor, Tensor], Tensor], src: Tensor, max_len: int) -> list[list[int]]:
    """Argmax decoding, at most ``max_len`` tokens (</s> excluded) per sentence."""
    b = src.shape[0]
    prefix = torch.full((b, 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        lp = next_log_probs(src, prefix)
        lp[:, PAD_ID] = lp[:, BOS_ID] = -math.inf
        nxt = lp.argmax(dim=-1).masked_fill(done, PAD_ID)
        prefix = torch.cat([prefix, nxt.unsqueeze(1)], dim=1)
        done |= nxt == EOS_ID
        if bool(done.all()):
            break
    return [_finish([t for t in row if t != PAD_ID]) for row in prefix[:, 1:].tolist()]


@torch.no_grad()
def beam_search(
    next_log_probs: Callable[[Tensor, Tensor], Tensor], src: Tensor, beam: int, max_len: int, lenpen: float = 1.0
) -> list[list[int]]:
    """Beam search; the best finished hypothesis by sum(log p) / len**lenpen (len includes </s>).

    A sentence stops when ``beam`` hypotheses have finished; at ``max_len`` the open ones are
    closed with </s>.
    """
    if beam <= 1:
        return greedy_search(next_log_probs, src, max_len)
    b, device = src.shape[0], src.device
    src_rep = src.repeat_interleave(beam, dim=0)
    prefix = torch.full((b * beam, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.full((b, beam), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    active = [True] * b
    for step in range(max_len + 1):
        lp = next_log_probs(src_rep, prefix).float()
        lp[:, PAD_ID] = lp[:, BOS_ID] = -math.inf
        if step == max_len:  # out of room: only </s> is allowed
            eos_col = lp[:, EOS_ID].clone()
            lp.fill_(-math.inf)
            lp[:, EOS_ID] = eos_col
        vocab = lp.shape[-1]
        cand = (scores.unsqueeze(-1) + lp.view(b, beam, vocab)).view(b, -1)
        top_scores, top_idx = cand.topk(min(2 * beam, cand.shape[1]), dim=1)
        new_scores = torch.full((b, beam), -math.inf, device=device)
        new_rows = torch.zeros(b, beam, dtype=torch.long)
        new_tokens = torch.full((b, beam), PAD_ID, dtype=torch.long)
        top_scores_l, top_idx_l = top_scores.tolist(), top_idx.tolist()
        for i in range(b):
            if not active[i]:
                continue
            k = 0
            for sc, idx in zip(top_scores_l[i], top_idx_l[i]):
                if sc == -math.inf:
                    break
                row, tok = divmod(idx, vocab)
                if tok == EOS_ID:
                    hyp = prefix[i * beam + row, 1:].tolist()
                    finished[i].append((sc / (len(hyp) + 1) ** lenpen, hyp))
                    continue
                new_scores[i, k], new_rows[i, k], new_tokens[i, k] = sc, i * beam + row, tok
                k += 1
                if k == beam:
                    break
            if len(finished[i]) >= beam or k == 0:
                active[i] = False
                new_scores[i] = -math.inf
        if not any(active):
            break
        prefix = torch.cat([prefix[new_rows.view(-1).to(device)], new_tokens.view(-1, 1).to(device)], dim=1)
        scores = new_scores
    out = []
    for i in range(b):
        best = max(finished[i], key=lambda h: h[0]) if finished[i] else (0.0, [])
        out.append(best[1])
    return out
