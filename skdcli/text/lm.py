"""Word-level language models: an LSTM LM (Zaremba-style) and a small decoder-only Transformer.

Both map ids (B, T) to next-token logits (B, T, V) and expose ``output_embedding`` (V, d): the
matrix right below the softmax, which embedding-space self-KD reads its soft targets from.
``tie_weights`` shares it with the input embedding (Press & Wolf / Inan et al.); the LSTM then
projects its hidden state to the embedding size when they differ.

The LSTM's ``forward(ids, state=(h, c), return_state=True)`` continues from a given state and
returns the new one: truncated BPTT carries it from window to window (detached in between; see
``CarriedHiddenState``) and stateful evaluation runs the whole stream through it
(``stateful_scores``). Without a state it starts from zeros, a pure function of the ids.
The Transformer exports whole sequences (dynamic batch and length); the LSTM exports as one
recurrent step with explicit state (``LSTMStep``). ``sample`` runs the same loop on an eager
model or a loaded export program through ``SequenceScorer`` / ``RecurrentScorer``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import choice
from ..engine.teachers import TeacherSignal


@dataclass
class LMConfig:
    arch: str = choice("lstm", ["lstm", "transformer"])  # lstm | transformer
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
        self.rnn = nn.LSTM(
            cfg.d_embed,
            cfg.d_hidden,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        # a tied output embedding lives in the input-embedding space: project the hidden state there
        self.proj = nn.Linear(cfg.d_hidden, cfg.d_embed) if cfg.tie_weights and cfg.d_hidden != cfg.d_embed else None
        self.out = nn.Linear(cfg.d_embed if self.proj is not None else cfg.d_hidden, vocab_size)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    @property
    def output_embedding(self) -> torch.Tensor:
        return self.out.weight

    def forward(
        self,
        ids: torch.Tensor,
        embed_noise: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_state: bool = False,
    ):
        """Logits (B, T, V); with ``return_state`` also the final (h, c), each (layers, B, hidden).
        ``state`` = the (h, c) to start from (None: zeros)."""
        x = self.embed(ids)
        if embed_noise is not None:
            x = x + embed_noise
        h, new_state = self.rnn(self.drop(x), state)
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)
        logits = self.out(h)
        return (logits, new_state) if return_state else logits

    def zero_state(self, batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.rnn.num_layers, batch, self.rnn.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)


class TransformerLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: LMConfig):
        super().__init__()
        if cfg.d_hidden != cfg.d_embed:
            raise ValueError("the transformer LM uses one width: set model.d_hidden = model.d_embed")
        self.max_len = cfg.max_len
        self.embed = nn.Embedding(vocab_size, cfg.d_embed)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_embed)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_embed, cfg.num_heads, cfg.ff_dim, cfg.dropout, batch_first=True, norm_first=True, activation="gelu"
        )
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
        ctx = ids[-self.max_context :] if self.max_context > 0 else ids
        return self.model(torch.tensor([ctx], dtype=torch.long))[0, -1]


class RecurrentScorer:
    """Next-word logits from an ``LSTMStep`` (eager or exported), feeding only the new ids."""

    def __init__(self, step, num_layers: int, hidden: int):
        self.step, self.seen = step, 0
        self.h = torch.zeros(num_layers, 1, hidden)
        self.c = torch.zeros(num_layers, 1, hidden)

    def __call__(self, ids: list[int]) -> torch.Tensor:
        for i in ids[self.seen :]:
            logits, self.h, self.c = self.step(torch.tensor([[i]], dtype=torch.long), self.h, self.c)
        self.seen = len(ids)
        return logits[0, -1]


@torch.no_grad()
def sample(
    next_logits,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
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
    return ids[len(prompt) :]


class CarriedHiddenState(TeacherSignal):
    """The LSTM state of each training column between truncated-BPTT windows (Zaremba et al. 2014;
    pytorch/examples ``word_language_model``: state carried from batch to batch, detached in between,
    reset to zeros at the start of every epoch).

    The state that enters window j of a column is the output of window j - 1, computed with the
    weights of the previous step, so it cannot be recomputed from a checkpoint's weights: it is
    saved with the checkpoint (a ``TeacherSignal``'s state), and a resumed run continues from
    exactly the state an uninterrupted one had. Under DDP each rank runs its own columns;
    ``before_checkpoint`` (called on every rank) sums the ranks' columns so rank 0 saves all of them.
    """

    def __init__(self, num_layers: int, columns: int, hidden: int):
        self.h = torch.zeros(num_layers, columns, hidden)
        self.c = torch.zeros(num_layers, columns, hidden)
        self.next_window = torch.zeros(columns, dtype=torch.long)  # the window each column's state enters
        self.owned = torch.zeros(columns, dtype=torch.bool)  # columns this rank has run (DDP)

    def get(self, columns: torch.Tensor, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The state entering ``window`` for ``columns`` (zeros at window 0)."""
        columns = columns.cpu()
        if self.h.device != device:
            self.h, self.c = self.h.to(device), self.c.to(device)
        if window == 0:
            shape = (self.h.shape[0], len(columns), self.h.shape[2])
            return torch.zeros(shape, device=device), torch.zeros(shape, device=device)
        late = columns[self.next_window[columns] != window]
        if len(late):
            raise RuntimeError(
                f"truncated BPTT out of order: column {int(late[0])} holds the state for window "
                f"{int(self.next_window[late[0]])}, asked for {window}"
            )
        idx = columns.to(device)
        return self.h[:, idx], self.c[:, idx]

    def put(self, columns: torch.Tensor, window: int, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Keep the (detached) state leaving ``window`` for ``columns``."""
        columns = columns.cpu()
        idx = columns.to(self.h.device)
        self.h[:, idx] = state[0].detach().to(self.h)
        self.c[:, idx] = state[1].detach().to(self.c)
        self.next_window[columns] = window + 1
        self.owned[columns] = True

    def before_checkpoint(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        mine = self.owned.to(self.h.device)
        parts = [
            self.h * mine[None, :, None],
            self.c * mine[None, :, None],
            (self.next_window.to(self.h.device) * mine).to(self.h.dtype).unsqueeze(0).unsqueeze(-1),
        ]
        flat = torch.cat([p.reshape(-1) for p in parts])
        dist.all_reduce(flat)  # every column belongs to exactly one rank: the sum is the union
        n_h = self.h.numel()
        self.h = flat[:n_h].view_as(self.h).clone()
        self.c = flat[n_h : 2 * n_h].view_as(self.c).clone()
        self.next_window = flat[2 * n_h :].round().long().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"h": self.h.cpu(), "c": self.c.cpu(), "next_window": self.next_window.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if tuple(state["h"].shape) != tuple(self.h.shape):
            raise ValueError(f"saved LSTM state has shape {tuple(state['h'].shape)}, expected {tuple(self.h.shape)}")
        self.h, self.c = state["h"].clone(), state["c"].clone()
        self.next_window = state["next_window"].clone().long()
        self.owned = torch.zeros_like(self.owned)


@torch.no_grad()
def stateful_logits(model: LSTMLM, columns: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``columns`` (B, L) through the LSTM window by window with the state carried: yields
    (logits (B, n, V), targets (B, n)) per window of n <= bptt predictions, the whole stream once."""
    state = None
    length = columns.shape[1]
    for start in range(0, length - 1, bptt):
        n = min(bptt, length - 1 - start)
        logits, state = model(columns[:, start : start + n], state=state, return_state=True)
        yield logits, columns[:, start + 1 : start + 1 + n]
