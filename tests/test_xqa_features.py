"""Features as in HF run_qa (offsets, doc stride, max query length) and n-best answer extraction."""

from __future__ import annotations

import numpy as np
import pytest

from skdcli.xqa.features import build_eval_features, build_train_features, postprocess_predictions, truncate_questions
from skdcli.xqa.synthetic import train_wordpiece

CONTEXT = (
    "The capital of Zorvak is Melidon. The longest river in Zorvak is Tala. Zorvak was founded by Pim "
    "Dorak. The flag of Zorvak is red. The national animal of Zorvak is the wolf."
)
QUESTION = "Who founded Zorvak?"
ANSWER = "Pim Dorak"


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([CONTEXT, QUESTION, "北京的首都是哪里？", "What is the capital of Zorvak?"] * 3, 200, 128)


def test_answer_tokens_map_back_to_the_answer_and_other_windows_point_at_cls(tokenizer) -> None:
    start = CONTEXT.index(ANSWER)
    feats = build_train_features(
        tokenizer,
        [QUESTION],
        [CONTEXT],
        [{"text": [ANSWER], "answer_start": [start]}],
        max_seq_length=24,
        doc_stride=8,
        max_query_length=8,
    )
    n = len(feats["input_ids"])
    assert n > 2 and (feats["example_index"] == 0).all()  # the context needs several windows
    hits = 0
    for i in range(n):
        s, e = int(feats["start_positions"][i]), int(feats["end_positions"][i])
        if s == 0:
            assert e == 0
            continue
        hits += 1
        ids = feats["input_ids"][i][s : e + 1].tolist()
        assert tokenizer.decode(ids).replace(" ", "") == ANSWER.replace(" ", "")
    assert hits >= 1


def test_kd_mask_is_context_tokens_and_cls(tokenizer) -> None:
    feats = build_train_features(
        tokenizer,
        [QUESTION],
        [CONTEXT],
        [{"text": [ANSWER], "answer_start": [CONTEXT.index(ANSWER)]}],
        max_seq_length=64,
        doc_stride=16,
        max_query_length=16,
    )
    ids, mask, types = feats["input_ids"][0], feats["kd_mask"][0], feats["token_type_ids"][0]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    expected = (types == 1) & (ids != sep) & (feats["attention_mask"][0] == 1)
    expected[list(ids).index(cls)] = True
    assert (mask == expected).all()


def test_questions_are_cut_to_max_query_length_tokens_and_left_stripped(tokenizer) -> None:
    long_q = "   " + " ".join(["capital"] * 30) + "?"
    (cut,) = truncate_questions(tokenizer, [long_q], 5)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 5 and not cut.startswith(" ")
    assert truncate_questions(tokenizer, ["  Who?"], 5) == ["Who?"]


def test_postprocessing_picks_the_best_valid_span_within_max_answer_length(tokenizer) -> None:
    feats = build_eval_features(tokenizer, [QUESTION], [CONTEXT], max_seq_length=64, doc_stride=16, max_query_length=16)
    offsets = feats.offsets[0]
    ctx_tokens = [i for i, o in enumerate(offsets) if o is not None]
    s, e = ctx_tokens[3], ctx_tokens[5]
    start = np.full((1, 64), -5.0, np.float32)
    end = np.full((1, 64), -5.0, np.float32)
    start[0, s], end[0, e] = 4.0, 3.0
    start[0, 1], end[0, 1] = 9.0, 9.0  # a question token: never an answer
    start[0, ctx_tokens[6]] = 3.9  # starts after the best end: only pairs with end >= start count
    (pred,) = postprocess_predictions([CONTEXT], feats, start[:, :], end[:, :], n_best=20, max_answer_length=30)
    assert pred["text"] == CONTEXT[offsets[s][0] : offsets[e][1]]
    assert (pred["start"], pred["end"]) == (offsets[s][0], offsets[e][1]) and 0 < pred["score"] <= 1
    (short,) = postprocess_predictions([CONTEXT], feats, start, end, n_best=20, max_answer_length=2)
    assert short["text"] != pred["text"]  # the 3-token span is too long now


def test_an_example_without_a_valid_span_gets_an_empty_answer(tokenizer) -> None:
    feats = build_eval_features(tokenizer, [QUESTION], [CONTEXT], 64, 16, 16)
    start = np.full((1, 64), -5.0, np.float32)
    end = np.full((1, 64), -5.0, np.float32)
    start[0, 0] = end[0, 0] = 1.0  # with n_best=1 both candidates are [CLS], outside the context: no span
    (pred,) = postprocess_predictions([CONTEXT], feats, start, end, n_best=1, max_answer_length=30)
    assert pred == {"text": "", "start": -1, "end": -1, "score": 0.0}
