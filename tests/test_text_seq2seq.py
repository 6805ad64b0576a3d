"""The Transformer encoder-decoder and its decoders: masking, causality, greedy/beam search."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skdcli.text.seq2seq import (Seq2SeqSizes, Seq2SeqTransformer, TranslationProgram, beam_search, greedy_search,
                                 pad_batch, program_scorer)
from skdcli.text.tokenizer import BOS_ID, EOS_ID, PAD_ID

V = 12


def tiny_model(**kw) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return Seq2SeqTransformer(Seq2SeqSizes(vocab_size=V, d_model=16, num_heads=2, ff_dim=32, encoder_layers=1,
                                           decoder_layers=1, dropout=0.0, max_positions=20, **kw)).eval()


def test_shapes_tied_embeddings_and_padding_masks() -> None:
    model = tiny_model()
    assert model.tgt_embed is model.embed and model.output is None
    assert Seq2SeqTransformer(Seq2SeqSizes(vocab_size=V, d_model=16, num_heads=2, share_embeddings=False,
                                           tie_output=False)).output is not None
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 8, 9]])
    logits = model(src, tgt)
    assert logits.shape == (1, 3, V)
    # extra source padding changes nothing
    padded = model(torch.tensor([[5, 6, 7, EOS_ID, PAD_ID, PAD_ID]]), tgt)
    assert torch.allclose(logits, padded, atol=1e-5)
    # causality: changing a later target token leaves earlier positions alone
    other = model(src, torch.tensor([[BOS_ID, 8, 4]]))
    assert torch.allclose(logits[:, :2], other[:, :2], atol=1e-6)
    assert not torch.allclose(logits[:, 2], other[:, 2])
    # the cached scorer gives the last position's log-probabilities
    lp = model.scorer()(src, tgt)
    assert torch.allclose(lp, F.log_softmax(logits[:, -1], -1), atol=1e-6)
    assert torch.allclose(program_scorer(TranslationProgram(model))(src, tgt), lp, atol=1e-6)


def _table_scorer(table: dict[tuple[int, ...], list[float]]):
    """A fake model: next-token probabilities by prefix (everything else: </s> certain)."""

    def next_log_probs(src: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        rows = []
        for p in prefix.tolist():
            probs = table.get(tuple(p[1:]), None)
            row = torch.zeros(V)  # log 0 = -inf: impossible tokens never enter the beam
            if probs is None:
                row[EOS_ID] = 1.0
            else:
                row[: len(probs)] = torch.tensor(probs)
            rows.append(torch.log(row / row.sum()))
        return torch.stack(rows)

    return next_log_probs


def test_beam_search_finds_what_greedy_misses() -> None:
    # greedy takes 4 (p .6) then must continue with 5 or 6 (.5 each): .6*.5 = .3 for "4 5",
    # while "7" (p .4) followed by "8" (p 1.0) has .4 -> beam 2 finds [7, 8]
    table = {(): [0, 0, 0, 0, .6, 0, 0, .4], (4,): [0, 0, 0, 0, 0, .5, .5], (7,): [0, 0, 0, 0, 0, 0, 0, 0, 1.0]}
    scorer = _table_scorer(table)
    src = torch.zeros(1, 2, dtype=torch.long)
    assert greedy_search(scorer, src, max_len=5) == [[4, 5]]
    assert beam_search(scorer, src, beam=1, max_len=5) == [[4, 5]]
    assert beam_search(scorer, src, beam=2, max_len=5, lenpen=0.0) == [[7, 8]]


def test_length_penalty_prefers_longer_outputs() -> None:
    # "4 </s>" has p .5 (2 tokens); "5 6 9 </s>" has p .45 (4 tokens)
    table = {(): [0, 0, 0, .5, 0, .5], (4,): [0, 0, 0, 1.0], (5,): [0, 0, 0, .1, 0, 0, .9], (5, 6): [0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0]}
    table[(5, 6, 9)] = [0, 0, 0, 1.0]
    table[()] = [0, 0, 0, 0, .5, .5]
    scorer = _table_scorer(table)
    src = torch.zeros(1, 2, dtype=torch.long)
    short = beam_search(scorer, src, beam=3, max_len=6, lenpen=0.0)  # raw log-prob: .5 > .45
    long = beam_search(scorer, src, beam=3, max_len=6, lenpen=1.0)  # per token: log(.45)/4 > log(.5)/2
    assert short == [[4]] and long == [[5, 6, 9]]
    assert math.log(0.45) / 4 > math.log(0.5) / 2


def test_max_len_and_batching() -> None:
    model = tiny_model()
    src = pad_batch([[5, 6, EOS_ID], [7, EOS_ID]])
    out = beam_search(model.scorer(), src, beam=3, max_len=4)
    assert len(out) == 2 and all(len(o) <= 4 and EOS_ID not in o and PAD_ID not in o for o in out)
    single = beam_search(model.scorer(), src[1:, :2], beam=3, max_len=4)
    assert single[0] == out[1]
    assert greedy_search(model.scorer(), src, max_len=0) == [[], []]
