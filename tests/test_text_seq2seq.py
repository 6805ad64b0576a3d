"""The Transformer encoder-decoder and its decoders: masking, causality, greedy/beam search."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from skdcli.text.seq2seq import (
    Seq2SeqSizes,
    Seq2SeqTransformer,
    TranslationProgram,
    beam_search,
    greedy_search,
    pad_batch,
    program_scorer,
    sinusoidal_positions,
)
from skdcli.text.tokenizer import BOS_ID, EOS_ID, PAD_ID

V = 12


def tiny_model(**kw) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    sizes = {
        "vocab_size": V,
        "d_model": 16,
        "num_heads": 2,
        "ff_dim": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "dropout": 0.0,
        "max_positions": 20,
        **kw,
    }
    return Seq2SeqTransformer(Seq2SeqSizes(**sizes)).eval()


def test_shapes_tied_embeddings_and_padding_masks() -> None:
    shared = tiny_model(share_embeddings=True)
    assert shared.tgt_embed is shared.embed
    model = tiny_model()
    # fairseq's IWSLT recipe: separate encoder/decoder tables, decoder input tied to the output projection
    assert model.tgt_embed is not model.embed and model.output is None
    assert (
        Seq2SeqTransformer(
            Seq2SeqSizes(vocab_size=V, d_model=16, num_heads=2, share_embeddings=False, tie_output=False)
        ).output
        is not None
    )
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
    table = {(): [0, 0, 0, 0, 0.6, 0, 0, 0.4], (4,): [0, 0, 0, 0, 0, 0.5, 0.5], (7,): [0, 0, 0, 0, 0, 0, 0, 0, 1.0]}
    scorer = _table_scorer(table)
    src = torch.zeros(1, 2, dtype=torch.long)
    assert greedy_search(scorer, src, max_len=5) == [[4, 5]]
    assert beam_search(scorer, src, beam=1, max_len=5) == [[4, 5]]
    assert beam_search(scorer, src, beam=2, max_len=5, lenpen=0.0) == [[7, 8]]


def test_length_penalty_prefers_longer_outputs() -> None:
    # "4 </s>" has p .5 (2 tokens); "5 6 9 </s>" has p .45 (4 tokens)
    table = {
        (): [0, 0, 0, 0.5, 0, 0.5],
        (4,): [0, 0, 0, 1.0],
        (5,): [0, 0, 0, 0.1, 0, 0, 0.9],
        (5, 6): [0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0],
    }
    table[(5, 6, 9)] = [0, 0, 0, 1.0]
    table[()] = [0, 0, 0, 0, 0.5, 0.5]
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


def _hand_post_ln_encoder(model: Seq2SeqTransformer, src: torch.Tensor) -> torch.Tensor:
    """fairseq's post-LN encoder layer written out: x = LN(x + attn(x)); x = LN(x + fc2(relu(fc1(x))))."""
    d = model.sizes.d_model
    x = model.embed.weight[src] * math.sqrt(d) + sinusoidal_positions(2 + src.shape[1], d)[2:]  # positions from 2
    layer = model.encoder[0]
    heads, hd = model.sizes.num_heads, d // model.sizes.num_heads
    q, k, v = (p(x).view(1, -1, heads, hd).transpose(1, 2) for p in (layer.attn.q, layer.attn.k, layer.attn.v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    attn = layer.attn.out((weights @ v).transpose(1, 2).reshape(1, -1, d))
    x = F.layer_norm(x + attn, (d,), layer.norm1.weight, layer.norm1.bias)
    ff = layer.ff[3](torch.relu(layer.ff[0](x)))
    return F.layer_norm(x + ff, (d,), layer.norm2.weight, layer.norm2.bias)


def test_fairseq_arch_is_post_layernorm_without_final_norms() -> None:
    model = tiny_model()
    assert model.sizes.arch == "fairseq" and model.enc_norm is None and model.dec_norm is None
    with torch.no_grad():
        for p in model.parameters():  # non-trivial LayerNorm affine parameters
            p.add_(0.05 * torch.randn_like(p))
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    memory, _ = model.encode(src)
    assert torch.allclose(memory, _hand_post_ln_encoder(model, src), atol=1e-5)
    # the pre-issue-14 layout stays available: pre-LN blocks and final LayerNorms
    old = tiny_model(arch="prenorm", share_embeddings=True)
    assert old.enc_norm is not None and old.dec_norm is not None and old.position_offset == 0
    with torch.no_grad():
        assert not torch.allclose(old.encode(src)[0], _hand_post_ln_encoder(old, src), atol=1e-3)


def test_fairseq_init_and_dropout_placement() -> None:
    torch.manual_seed(0)
    d = 64
    model = Seq2SeqTransformer(
        Seq2SeqSizes(
            vocab_size=50,
            d_model=d,
            num_heads=4,
            ff_dim=128,
            encoder_layers=1,
            decoder_layers=1,
            dropout=0.3,
            activation_dropout=0.1,
            tie_output=False,
        )
    )
    attn = model.decoder[0].cross_attn
    qkv_bound = math.sqrt(6 / (2 * d)) / math.sqrt(2)  # xavier_uniform with gain 1/sqrt(2)
    for proj in (attn.q, attn.k, attn.v):
        assert proj.weight.abs().max() <= qkv_bound and proj.weight.abs().max() > 0.95 * qkv_bound
    assert attn.out.weight.abs().max() > 1.2 * qkv_bound and torch.count_nonzero(attn.out.bias) == 0
    for table in (model.embed, model.tgt_embed, model.output):
        assert table.weight.std().item() == pytest.approx(d**-0.5, rel=0.1)
    assert torch.count_nonzero(model.embed.weight[PAD_ID]) == 0 and model.output.bias is None
    ff = model.encoder[0].ff  # fc1 -> relu -> activation_dropout -> fc2; the block's dropout comes after fc2
    assert ff[2].p == 0.1 and model.encoder[0].drop.p == 0.3 and model.drop.p == 0.3
    assert tiny_model(arch="prenorm", dropout=0.3).encoder[0].ff[2].p == 0.3  # the old layout's inner dropout
