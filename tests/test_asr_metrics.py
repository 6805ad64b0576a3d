"""CTC decoding, error rates, spike timing and the posterior plot, on hand-computed examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from skdcli.asr_ctc.metrics import (
    aggregate_spike_timing,
    beam_ctc_decode,
    error_rates,
    greedy_ctc_decode,
    spike_frames,
    spike_timing,
)
from skdcli.asr_ctc.plots import plot_posteriors

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def path_log_probs(path: list[int], vocab: int, peak: float = 0.9) -> torch.Tensor:
    """(T, V) log-probabilities whose argmax follows ``path``; ``peak`` on it, rest spread evenly."""
    probs = torch.full((len(path), vocab), (1 - peak) / (vocab - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


# --- greedy ----------------------------------------------------------------------------------


def test_greedy_collapses_repeats_and_drops_blanks():
    # argmax 1 1 0 1 2 2 0 -> "1 1" are one token, the blank separates the second 1 -> [1, 1, 2]
    lp = path_log_probs([1, 1, 0, 1, 2, 2, 0], vocab=4)
    assert greedy_ctc_decode(lp.unsqueeze(0)) == [[1, 1, 2]]


def test_greedy_batch_respects_lengths_and_accepts_numpy_logits():
    a = path_log_probs([3, 3, 3, 0, 1, 2], vocab=4)
    b = path_log_probs([0, 2, 0, 2, 0, 0], vocab=4)
    batch = torch.stack([a, b])
    # Utterance 0 has 4 valid frames: the padded "1 2" must not be emitted.
    assert greedy_ctc_decode(batch, torch.tensor([4, 6])) == [[3], [2, 2]]
    logits = batch.numpy() * 3.0 + 7.0  # any monotone map of the scores decodes the same
    assert greedy_ctc_decode(logits, [4, 6]) == [[3], [2, 2]]
    assert greedy_ctc_decode(batch) == [[3, 1, 2], [2, 2]]


def test_greedy_nonzero_blank_index():
    lp = path_log_probs([2, 0, 0, 2, 1], vocab=3)
    assert greedy_ctc_decode(lp.unsqueeze(0), blank=2) == [[0, 1]]


# --- beam ------------------------------------------------------------------------------------


def test_beam_beats_greedy_when_alignments_sum():
    """Two frames, vocabulary {blank, a}, both frames p(blank) = 0.6, p(a) = 0.4.

    Greedy takes the best single path (blank, blank) with probability 0.6 * 0.6 = 0.36 and
    outputs "". The sequence "a" has three alignments: (a, a) 0.16, (a, blank) 0.24 and
    (blank, a) 0.24, total 0.64 > 0.36, so the prefix beam search must output "a".
    """
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    assert greedy_ctc_decode(lp.unsqueeze(0)) == [[]]
    assert beam_ctc_decode(lp, beam_size=4) == [1]


def test_beam_agrees_with_greedy_on_peaked_posteriors():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        path = torch.randint(0, 6, (30,), generator=gen).tolist()
        logits = torch.zeros(30, 6)
        logits[torch.arange(30), torch.tensor(path)] = 10.0  # p(argmax) ~ 0.9997
        greedy = greedy_ctc_decode(logits.unsqueeze(0))[0]
        assert beam_ctc_decode(logits, beam_size=8) == greedy
        assert beam_ctc_decode(logits.log_softmax(-1), beam_size=3) == greedy


def test_beam_matches_brute_force_sum_over_alignments():
    # With all tokens tried and a beam that holds every prefix, the search is exact: its answer
    # is the argmax of the sequence probability obtained by enumerating all V**T paths.
    rng = np.random.default_rng(1)
    frames, vocab = 4, 3
    for _ in range(10):
        probs = rng.dirichlet(np.ones(vocab), size=frames)
        totals: dict[tuple[int, ...], float] = {}
        for path in itertools.product(range(vocab), repeat=frames):
            collapsed = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
            totals[collapsed] = totals.get(collapsed, 0.0) + math.prod(probs[t, k] for t, k in enumerate(path))
        best = max(totals, key=totals.get)
        assert beam_ctc_decode(np.log(probs), beam_size=64) == list(best)


def test_beam_empty_utterance():
    assert beam_ctc_decode(torch.zeros(0, 5)) == []


# --- error rates -----------------------------------------------------------------------------


def test_error_rates_single_pair_by_hand():
    # words: the=the, cat->bat (sub), sat=sat, +on (ins): 2 edits / 3 reference words.
    # chars: "the cat sat" has 11 characters (spaces count); c->b (sub), +" on" (3 ins): 4 edits.
    out = error_rates(["the cat sat"], ["the bat sat on"])
    assert out["word_edits"] == 2 and out["num_words"] == 3
    assert out["wer"] == pytest.approx(2 / 3)
    assert out["char_edits"] == 4 and out["num_chars"] == 11
    assert out["cer"] == pytest.approx(4 / 11)


def test_error_rates_are_corpus_level():
    # (2 + 2 deletions) / (3 + 2) words = 0.8; the mean of per-utterance WERs would be 0.833.
    out = error_rates(["the cat sat", "hello world"], ["the bat sat on", ""])
    assert out["word_edits"] == 4 and out["num_words"] == 5
    assert out["wer"] == pytest.approx(0.8)
    # chars: 4 edits + 11 deletions over 11 + 11 characters.
    assert out["cer"] == pytest.approx(15 / 22)


def test_error_rates_empty_reference_and_whitespace():
    # An empty reference adds no words; its hypothesis word is one insertion: 1 / 2.
    out = error_rates(["", "a b"], ["x", "a b"])
    assert out["num_words"] == 2 and out["word_edits"] == 1 and out["wer"] == pytest.approx(0.5)
    assert error_rates([""], [""])["wer"] == 0.0
    assert error_rates([], [])["num_words"] == 0
    spaced = error_rates(["  a  b "], ["a b"])
    assert spaced["wer"] == 0.0 and spaced["cer"] == 0.0 and spaced["num_chars"] == 3
    with pytest.raises(ValueError):
        error_rates(["a"], [])


# --- spike timing ----------------------------------------------------------------------------


def test_spike_frames_first_and_peak():
    # argmax: 0 1 1 1 0 1 2 2 -> runs (1-3, token 1), (5, token 1), (6-7, token 2)
    probs = torch.tensor(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.8, 0.1],  # peak of the first run
            [0.3, 0.6, 0.1],
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.05, 0.05, 0.9],  # peak of the last run
        ]
    )
    assert spike_frames(probs.log()) == [(1, 1), (5, 1), (6, 2)]
    assert spike_frames(probs.log(), position="peak") == [(2, 1), (5, 1), (7, 2)]
    with pytest.raises(ValueError):
        spike_frames(probs.log(), position="last")


def test_spike_timing_identical_heads():
    lp = path_log_probs([0, 1, 1, 0, 2, 0, 3, 0], vocab=4)
    out = spike_timing(lp, lp.clone())
    assert out == {
        "comparable": True,
        "num_tokens": 3,
        "mean_offset": 0.0,
        "frac_nonzero_offset": 0.0,
        "max_offset": 0,
        "overlap": 1.0,
    }


def test_spike_timing_student_two_frames_late():
    teacher = path_log_probs([0, 1, 1, 0, 2, 0, 0, 0], vocab=3)
    student = path_log_probs([0, 0, 0, 1, 1, 0, 2, 0], vocab=3)
    out = spike_timing(teacher, student)
    assert out["comparable"] is True and out["num_tokens"] == 2
    assert out["mean_offset"] == 2.0 and out["max_offset"] == 2 and out["frac_nonzero_offset"] == 1.0
    # non-blank frames: teacher {1, 2, 4}, student {3, 4, 6}; Jaccard = |{4}| / |{1,2,3,4,6}|.
    assert out["overlap"] == pytest.approx(1 / 5)


def test_spike_timing_unequal_sequences_not_comparable():
    teacher = path_log_probs([0, 1, 0, 2, 0], vocab=3)
    student = path_log_probs([0, 1, 0, 1, 0], vocab=3)
    out = spike_timing(teacher, student)
    assert out["comparable"] is False and out["num_tokens"] == 0 and out["mean_offset"] is None
    # non-blank frames {1, 3} in both heads: the frame sets agree even though the labels differ.
    assert out["overlap"] == 1.0
    with pytest.raises(ValueError):
        spike_timing(teacher, student[:4])


def test_aggregate_spike_timing_token_weighted():
    utts = [
        {
            "comparable": True,
            "num_tokens": 2,
            "mean_offset": 0.0,
            "frac_nonzero_offset": 0.0,
            "max_offset": 0,
            "overlap": 1.0,
        },
        {
            "comparable": True,
            "num_tokens": 3,
            "mean_offset": 2.0,
            "frac_nonzero_offset": 2 / 3,
            "max_offset": 3,
            "overlap": 0.5,
        },
        {
            "comparable": False,
            "num_tokens": 0,
            "mean_offset": None,
            "frac_nonzero_offset": None,
            "max_offset": None,
            "overlap": 0.0,
        },
    ]
    out = aggregate_spike_timing(utts)
    assert out["num_utterances"] == 3 and out["num_tokens"] == 5
    assert out["frac_comparable"] == pytest.approx(2 / 3)
    assert out["mean_offset"] == pytest.approx((0 * 2 + 2 * 3) / 5)  # not the plain mean 1.0
    assert out["frac_nonzero_offset"] == pytest.approx(2 / 5)
    assert out["max_offset"] == 3
    assert out["mean_overlap"] == pytest.approx(0.5)
    empty = aggregate_spike_timing([])
    assert empty["num_utterances"] == 0 and empty["mean_offset"] is None


# --- plot ------------------------------------------------------------------------------------


def test_plot_posteriors_writes_png(tmp_path):
    teacher = path_log_probs([0, 1, 1, 0, 2, 0, 3, 3, 0, 0], vocab=5)
    student = path_log_probs([0, 0, 1, 0, 2, 2, 0, 3, 0, 0], vocab=5, peak=0.6)
    out = plot_posteriors(teacher, student, tmp_path / "post.png", symbols=["_", "a", " ", "b", "c"], title="utt 1")
    assert out == tmp_path / "post.png"
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["post.png"]  # no temp file left behind
