"""LSTM and Transformer LMs (skdcli/text/lm.py): shapes, tying, causality, step form, sampling."""

from __future__ import annotations

import pytest
import torch

from skdcli.text.lm import LSTMLM, LMConfig, LSTMStep, RecurrentScorer, SequenceScorer, TransformerLM, build_lm, sample

V = 30


def models():
    torch.manual_seed(0)
    return [
        LSTMLM(V, LMConfig(d_embed=8, d_hidden=12, num_layers=2, dropout=0.0, tie_weights=True)),
        LSTMLM(V, LMConfig(d_embed=8, d_hidden=8, dropout=0.0, tie_weights=False)),
        TransformerLM(
            V,
            LMConfig(
                arch="transformer", d_embed=8, d_hidden=8, num_layers=2, num_heads=2, ff_dim=16, max_len=32, dropout=0.0
            ),
        ),
    ]


@pytest.mark.parametrize("model", models(), ids=["lstm-tied-proj", "lstm-untied", "transformer"])
def test_shapes_tying_and_causality(model) -> None:
    model.eval()
    ids = torch.randint(0, V, (3, 7))
    logits = model(ids)
    assert logits.shape == (3, 7, V)
    assert model.output_embedding.shape[0] == V
    tied = model.output_embedding is model.embed.weight
    assert tied == (model.out.weight.data_ptr() == model.embed.weight.data_ptr())
    changed = ids.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % V
    assert torch.allclose(model(changed)[:, :4], logits[:, :4], atol=1e-6)  # the future never leaks back


def test_lstm_step_form_equals_the_sequence_form() -> None:
    model = models()[0].eval()
    ids = torch.randint(0, V, (2, 6))
    step = LSTMStep(model)
    h = c = torch.zeros(2, 2, 12)
    outs = []
    for t in range(6):
        out, h, c = step(ids[:, t : t + 1], h, c)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, 1), model(ids), atol=1e-6)


def test_sampling_greedy_topk_and_stop() -> None:
    model = models()[2].eval()
    prompt = [1, 2, 3]
    greedy = sample(SequenceScorer(model), prompt, 6, temperature=0.0)
    assert len(greedy) == 6
    # top-k 1 at any temperature is greedy
    assert (
        sample(SequenceScorer(model), prompt, 6, temperature=2.0, top_k=1, generator=torch.Generator().manual_seed(1))
        == greedy
    )
    # the same generator seed gives the same sample
    a = sample(SequenceScorer(model), prompt, 8, 1.0, generator=torch.Generator().manual_seed(5))
    b = sample(SequenceScorer(model), prompt, 8, 1.0, generator=torch.Generator().manual_seed(5))
    assert a == b
    stop = greedy[0]
    assert sample(SequenceScorer(model), prompt, 6, temperature=0.0, stop_id=stop) == [stop]
    # the recurrent scorer of an LSTM gives the same greedy continuation as re-reading the sequence
    lstm = models()[0].eval()
    assert sample(RecurrentScorer(LSTMStep(lstm), 2, 12), prompt, 5, 0.0) == sample(
        SequenceScorer(lstm), prompt, 5, 0.0
    )


def test_build_lm_rejects_unknown_arch_and_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="unknown LM architecture"):
        build_lm(V, LMConfig(arch="gru"))
    with pytest.raises(ValueError, match="one width"):
        build_lm(V, LMConfig(arch="transformer", d_embed=8, d_hidden=16))
