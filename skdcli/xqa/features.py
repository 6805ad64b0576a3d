"""Tokenised features and answer extraction, as in Hugging Face's `run_qa.py` / `utils_qa.py` example.

- A question is cut to ``max_query_length`` tokens (the legacy SQuAD processor's rule; `run_qa.py`
  has no such limit) and left-stripped (`run_qa.py`).
- Question + context are tokenised by the fast tokenizer with ``truncation="only_second"``,
  ``max_length``, ``stride=doc_stride``, overflowing windows and the offset mapping, padded to
  ``max_length``. A training window whose context does not contain the whole answer gets the
  [CLS] index as start and end; otherwise the first/last tokens covering the answer characters.
- ``kd_mask`` marks the positions a distillation term may look at when masking is on (context
  tokens + [CLS], recipes/xqa/README.md): the official code uses every position, padding and
  question included.
- Prediction (`postprocess_qa_predictions`): per window the ``n_best`` best start and end logits,
  every pair inside the context with 0 <= end - start < ``max_answer_length``, scored by the sum
  of the two logits; the example's answer is the best pair over its windows, cut from the context
  with the offsets (no hand-written alignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.errors import SkdError


def truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q[: offsets[max_query_length - 1][1]] if len(offsets) > max_query_length else q)
    return out


def _tokenize(
    tokenizer, questions: list[str], contexts: list[str], max_seq_length: int, doc_stride: int, max_query_length: int
):
    pad_on_right = tokenizer.padding_side == "right"
    questions = truncate_questions(tokenizer, questions, max_query_length)
    first, second = (questions, contexts) if pad_on_right else (contexts, questions)
    try:
        return tokenizer(
            first,
            second,
            truncation="only_second" if pad_on_right else "only_first",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
            return_token_type_ids=True,
        )
    except Exception as exc:  # e.g. stride too large for the room the question leaves
        raise SkdError(
            f"cannot build features ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); check "
            "data.max_seq_length, data.doc_stride and data.max_query_length"
        ) from exc


def _context_id(tokenizer) -> int:
    return 1 if tokenizer.padding_side == "right" else 0


def build_train_features(
    tokenizer,
    questions: list[str],
    contexts: list[str],
    answers: list[dict],
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
) -> dict[str, np.ndarray]:
    """Training windows (`run_qa.py` ``prepare_train_features``) as arrays of shape (N, max_seq_length)."""
    enc = _tokenize(tokenizer, questions, contexts, max_seq_length, doc_stride, max_query_length)
    ctx_id = _context_id(tokenizer)
    sample_mapping = enc["overflow_to_sample_mapping"]
    starts, ends = [], []
    kd_mask = np.zeros((len(enc["input_ids"]), max_seq_length), dtype=np.bool_)
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        kd_mask[i] = [s == ctx_id for s in sequence_ids]
        kd_mask[i, cls_index] = True
        ans = answers[sample_mapping[i]]
        if len(ans["answer_start"]) == 0:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = ans["answer_start"][0]
        end_char = start_char + len(ans["text"][0])
        token_start = 0
        while sequence_ids[token_start] != ctx_id:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != ctx_id:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        while token_start < len(offsets) and offsets[token_start][0] <= start_char:
            token_start += 1
        starts.append(token_start - 1)
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        ends.append(token_end + 1)
    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int8),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int8),
        "start_positions": np.asarray(starts, dtype=np.int64),
        "end_positions": np.asarray(ends, dtype=np.int64),
        "kd_mask": kd_mask,
        "example_index": np.asarray(sample_mapping, dtype=np.int64),
    }


@dataclass
class EvalFeatures:
    """Windows of a list of examples for prediction: arrays + per window its example and its
    context offsets (None outside the context)."""

    arrays: dict[str, np.ndarray]
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]

    def __len__(self) -> int:
        return len(self.example_index)


def build_eval_features(
    tokenizer, questions: list[str], contexts: list[str], max_seq_length: int, doc_stride: int, max_query_length: int
) -> EvalFeatures:
    """Prediction windows (`run_qa.py` ``prepare_validation_features``)."""
    enc = _tokenize(tokenizer, questions, contexts, max_seq_length, doc_stride, max_query_length)
    ctx_id = _context_id(tokenizer)
    offsets = []
    for i, offs in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        offsets.append([tuple(o) if seq[k] == ctx_id else None for k, o in enumerate(offs)])
    arrays = {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int8),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int8),
    }
    return EvalFeatures(arrays, list(enc["overflow_to_sample_mapping"]), offsets)


def postprocess_predictions(
    contexts: list[str],
    features: EvalFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[dict]:
    """One prediction per example: ``{text, start, end, score}`` (chars into the context; score =
    the softmax probability of the chosen span among the example's n-best candidates, as
    `utils_qa.py` reports it). An example without a valid span gets ``text=""``, start = end = -1."""
    by_example: list[list[int]] = [[] for _ in contexts]
    for f, e in enumerate(features.example_index):
        by_example[e].append(f)
    out = []
    for e, feats in enumerate(by_example):
        cands: list[tuple[float, int, int]] = []
        for f in feats:
            s_log, e_log, offs = start_logits[f], end_logits[f], features.offsets[f]
            k = min(n_best, len(s_log))
            top_s = np.argsort(s_log)[-1 : -k - 1 : -1]
            top_e = np.argsort(e_log)[-1 : -k - 1 : -1]
            for si in top_s:
                if offs[si] is None:
                    continue
                for ei in top_e:
                    if offs[ei] is None or ei < si or ei - si + 1 > max_answer_length:
                        continue
                    cands.append((float(s_log[si] + e_log[ei]), offs[si][0], offs[ei][1]))
        if not cands:
            out.append({"text": "", "start": -1, "end": -1, "score": 0.0})
            continue
        cands.sort(key=lambda c: -c[0])
        cands = cands[:n_best]
        scores = np.array([c[0] for c in cands])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        _, start, end = cands[0]
        out.append({"text": contexts[e][start:end], "start": int(start), "end": int(end), "score": float(probs[0])})
    return out
