"""CTC decoding, error rates and spike-timing analysis (asr-ctc.md §7).

Every function takes per-frame scores as a ``torch.Tensor`` or a ``numpy`` array. Log-probabilities
and raw logits are both accepted: argmax-based functions do not care, and the beam search
re-normalises with a log-softmax (which leaves true log-probabilities unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jiwer
import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_frames(x: np.ndarray, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (T, V), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def greedy_ctc_decode(
    log_probs: ArrayLike, lengths: ArrayLike | Sequence[int] | None = None, blank: int = 0
) -> list[list[int]]:
    """Best-path CTC decoding of a batch: argmax per frame, collapse repeats, drop blanks.

    Args:
        log_probs: (B, T, V) log-probabilities or logits.
        lengths: (B,) number of valid frames per utterance; ``None`` means all T frames.
        blank: index of the CTC blank.

    Returns:
        One list of token ids per utterance.
    """
    scores = log_probs if isinstance(log_probs, torch.Tensor) else torch.as_tensor(np.asarray(log_probs))
    if scores.ndim != 3:
        raise ValueError(f"log_probs must have shape (B, T, V), got {tuple(scores.shape)}")
    ids = scores.argmax(dim=-1).cpu()  # (B, T)
    batch, frames = ids.shape
    if lengths is None:
        lens = torch.full((batch,), frames, dtype=torch.long)
    else:
        lens = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lens.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lens.shape)}")
    # A frame emits a token when it is non-blank, differs from the previous frame's label
    # (repeats collapse) and lies inside the utterance (padding frames never emit).
    prev = torch.cat([torch.full((batch, 1), -1, dtype=ids.dtype), ids[:, :-1]], dim=1)
    valid = torch.arange(frames).unsqueeze(0) < lens.unsqueeze(1)
    emit = (ids != blank) & (ids != prev) & valid
    return [row[mask].tolist() for row, mask in zip(ids, emit)]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _accumulate(table: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], slot: int, value: float) -> None:
    """Log-add ``value`` into ``table[prefix][slot]`` (slot 0: ends in blank, 1: ends in label)."""
    entry = table.setdefault(prefix, [-math.inf, -math.inf])
    entry[slot] = _logaddexp(entry[slot], value)


def beam_ctc_decode(log_probs: ArrayLike, beam_size: int = 8, blank: int = 0) -> list[int]:
    """CTC prefix beam search without a language model, for one utterance.

    Greedy decoding scores one alignment; the probability of a label sequence is the sum over
    *all* alignments that collapse to it. Prefix beam search keeps, for every candidate prefix
    ``y``, two log-probabilities over the frames seen so far:

    - ``p_b(y)``:  total probability of alignments of ``y`` whose last frame is blank;
    - ``p_nb(y)``: total probability of alignments of ``y`` whose last frame is ``y[-1]``.

    At frame t, with ``p(y) = p_b(y) + p_nb(y)`` and frame posteriors ``q_t``:

    - blank:            ``p_b'(y)     += p(y) * q_t(blank)``
    - repeat ``y[-1]``: ``p_nb'(y)    += p_nb(y) * q_t(c)``   (collapses into the same prefix)
                        ``p_nb'(y+c)  += p_b(y) * q_t(c)``    (a blank separated the two)
    - other ``c``:      ``p_nb'(y+c)  += p(y) * q_t(c)``

    and the ``beam_size`` prefixes with the largest ``p`` survive. All sums are done in log
    space. To bound the work per frame, only the ``beam_size`` most likely tokens of each frame
    are tried as extensions (tokens outside the top ``beam_size`` at a frame contribute little);
    with ``beam_size >= V`` and a beam wide enough to hold every prefix the search is exact.

    Args:
        log_probs: (T, V) log-probabilities or logits of one utterance (valid frames only).
        beam_size: prefixes kept after each frame, and tokens tried per frame.
        blank: index of the CTC blank.

    Returns:
        The token ids of the most probable label sequence found.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    scores = _to_numpy(log_probs)
    _check_frames(scores, "log_probs")
    # Log-softmax makes logits usable and is the identity on true log-probabilities.
    scores = scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
    num_tokens = scores.shape[1]
    top_k = min(beam_size, num_tokens)

    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in scores:
        candidates = np.argpartition(-frame, top_k - 1)[:top_k].tolist()
        frame_list = frame.tolist()
        blank_lp = frame_list[blank]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_b, p_nb) in beams.items():
            p_total = _logaddexp(p_b, p_nb)
            # The blank path is always scored, even when blank is not a top-k token, so that a
            # prefix never loses its own probability mass through pruning of extensions.
            _accumulate(nxt, prefix, 0, p_total + blank_lp)
            last = prefix[-1] if prefix else None
            for token in candidates:
                if token == blank:
                    continue
                lp = frame_list[token]
                if token == last:
                    _accumulate(nxt, prefix, 1, p_nb + lp)
                    _accumulate(nxt, prefix + (token,), 1, p_b + lp)
                else:
                    _accumulate(nxt, prefix + (token,), 1, p_total + lp)
            # The repeat of the last label keeps the prefix alive through a long spike even
            # when that label fell outside this frame's top-k.
            if last is not None and last not in candidates:
                _accumulate(nxt, prefix, 1, p_nb + frame_list[last])

        ranked = sorted(nxt.items(), key=lambda item: _logaddexp(*item[1]), reverse=True)
        beams = {prefix: (p[0], p[1]) for prefix, p in ranked[:beam_size]}

    best = max(beams.items(), key=lambda item: _logaddexp(*item[1]))[0]
    return list(best)


# ---------------------------------------------------------------------------------------------
# Error rates
# ---------------------------------------------------------------------------------------------


def _normalise_space(text: str) -> str:
    # jiwer's character transform strips the ends but keeps inner double spaces; collapsing
    # whitespace here makes "a  b" and "a b" identical for both WER and CER.
    return " ".join(text.split())


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float | int]:
    """Corpus-level WER and CER: total edits over total reference words / characters.

    This is the PROPOSAL of asr-ctc.md §7 (the unofficial repo averages per-utterance WER
    instead, which over-weights short utterances). Rates are fractions (0.25 = 25 %) and can
    exceed 1 when the hypotheses insert many words. Characters include the single spaces
    between words. Empty references and hypotheses are fine: an empty reference contributes
    zero words and its hypothesis' words count as insertions. If the whole corpus has no
    reference words, the rate is the edit count itself (jiwer's convention), so it stays
    finite and is 0 only for a perfect empty output.

    Returns:
        ``{"wer", "cer", "num_words", "num_chars", "word_edits", "char_edits"}``.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return {"wer": 0.0, "cer": 0.0, "num_words": 0, "num_chars": 0, "word_edits": 0, "char_edits": 0}
    refs_n = [_normalise_space(r) for r in refs]
    hyps_n = [_normalise_space(h) for h in hyps]
    words = jiwer.process_words(refs_n, hyps_n)
    chars = jiwer.process_characters(refs_n, hyps_n)
    num_words = words.hits + words.substitutions + words.deletions
    num_chars = chars.hits + chars.substitutions + chars.deletions
    word_edits = words.substitutions + words.deletions + words.insertions
    char_edits = chars.substitutions + chars.deletions + chars.insertions
    return {
        "wer": word_edits / max(num_words, 1),
        "cer": char_edits / max(num_chars, 1),
        "num_words": num_words,
        "num_chars": num_chars,
        "word_edits": word_edits,
        "char_edits": char_edits,
    }


# ---------------------------------------------------------------------------------------------
# Spike timing (asr-ctc.md §7, PROPOSAL definition)
# ---------------------------------------------------------------------------------------------


def spike_frames(
    log_probs: ArrayLike, blank: int = 0, position: Literal["first", "peak"] = "first"
) -> list[tuple[int, int]]:
    """Frames where a CTC head "spikes", as ``(frame, token)`` pairs in time order.

    A spike is a run of consecutive frames whose argmax is the same non-blank token. Each run
    yields one spike, so the spikes correspond 1:1 to the tokens of the greedy transcript
    (the same label separated by a blank gives two spikes, as it gives two tokens).

    ``position="first"`` places the spike at the run's first frame: the onset is where the
    head commits to the label and does not move when the run merely lengthens.
    ``position="peak"`` places it at the frame of the run with the highest score for that
    token (earliest frame on ties).

    Args:
        log_probs: (T, V) log-probabilities or logits of one utterance (valid frames only).
    """
    if position not in ("first", "peak"):
        raise ValueError(f"position must be 'first' or 'peak', got {position!r}")
    scores = _to_numpy(log_probs)
    _check_frames(scores, "log_probs")
    ids = scores.argmax(axis=-1)
    spikes: list[tuple[int, int]] = []
    start = 0
    for t in range(1, len(ids) + 1):
        if t < len(ids) and ids[t] == ids[start]:
            continue
        token = int(ids[start])
        if token != blank:
            frame = start if position == "first" else start + int(scores[start:t, token].argmax())
            spikes.append((frame, token))
        start = t
    return spikes


def spike_timing(
    teacher_log_probs: ArrayLike,
    student_log_probs: ArrayLike,
    blank: int = 0,
    position: Literal["first", "peak"] = "first",
) -> dict[str, bool | int | float | None]:
    """Compare where a teacher and a student CTC head place their spikes, for one utterance.

    Offsets are only defined when both greedy transcripts are equal (``comparable``): then the
    i-th teacher spike is paired with the i-th student spike. ``overlap`` is always computed:
    the Jaccard index of the two sets of non-blank frames (before run collapsing); two heads
    that never leave blank have identical (empty) sets, so their overlap is 1.

    Args:
        teacher_log_probs, student_log_probs: (T, V) scores of the two heads on the same
            valid frames.

    Returns:
        ``comparable``; ``num_tokens`` (paired tokens, 0 if not comparable); ``mean_offset``
        (frames), ``frac_nonzero_offset`` and ``max_offset`` (``None`` unless comparable with
        at least one token); ``overlap`` in [0, 1].
    """
    teacher = _to_numpy(teacher_log_probs)
    student = _to_numpy(student_log_probs)
    _check_frames(teacher, "teacher_log_probs")
    _check_frames(student, "student_log_probs")
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {teacher.shape} and student {student.shape} shapes differ")

    t_spikes = spike_frames(teacher, blank=blank, position=position)
    s_spikes = spike_frames(student, blank=blank, position=position)
    comparable = [tok for _, tok in t_spikes] == [tok for _, tok in s_spikes]

    t_frames = set(np.flatnonzero(teacher.argmax(axis=-1) != blank).tolist())
    s_frames = set(np.flatnonzero(student.argmax(axis=-1) != blank).tolist())
    union = t_frames | s_frames
    overlap = len(t_frames & s_frames) / len(union) if union else 1.0

    result: dict[str, bool | int | float | None] = {
        "comparable": comparable,
        "num_tokens": 0,
        "mean_offset": None,
        "frac_nonzero_offset": None,
        "max_offset": None,
        "overlap": overlap,
    }
    if comparable and t_spikes:
        offsets = [abs(tf - sf) for (tf, _), (sf, _) in zip(t_spikes, s_spikes)]
        result.update(
            num_tokens=len(offsets),
            mean_offset=sum(offsets) / len(offsets),
            frac_nonzero_offset=sum(o > 0 for o in offsets) / len(offsets),
            max_offset=max(offsets),
        )
    return result


def aggregate_spike_timing(per_utterance: list[dict]) -> dict[str, int | float | None]:
    """Combine ``spike_timing`` results over a corpus.

    Offsets are token-weighted over comparable utterances (a long utterance counts for as many
    tokens as it has, as in a corpus-level WER); ``mean_overlap`` averages over all utterances.
    Fields are ``None`` when nothing contributes to them.
    """
    n = len(per_utterance)
    paired = [u for u in per_utterance if u["comparable"] and u["num_tokens"] > 0]
    num_tokens = sum(u["num_tokens"] for u in paired)
    summary: dict[str, int | float | None] = {
        "num_utterances": n,
        "frac_comparable": sum(bool(u["comparable"]) for u in per_utterance) / n if n else None,
        "num_tokens": num_tokens,
        "mean_offset": None,
        "frac_nonzero_offset": None,
        "max_offset": None,
        "mean_overlap": sum(u["overlap"] for u in per_utterance) / n if n else None,
    }
    if num_tokens:
        summary["mean_offset"] = sum(u["mean_offset"] * u["num_tokens"] for u in paired) / num_tokens
        summary["frac_nonzero_offset"] = sum(u["frac_nonzero_offset"] * u["num_tokens"] for u in paired) / num_tokens
        summary["max_offset"] = max(u["max_offset"] for u in paired)
    return summary
