"""Session fixtures of the xqa recipe: one small synthetic corpus (prepared through the real
readers, with its WordPiece tokenizer trained by HF `tokenizers` and a random tiny
`BertForQuestionAnswering` saved in HF format), shared by every xqa test."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough that a training step takes milliseconds and prep about a second.
XQA_SIZES = {"squad_paragraphs": 24, "xquad_paragraphs": 12, "dev_paragraphs": 2, "test_paragraphs": 2,
             "questions_per_paragraph": 2}
XQA_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
# 12 parallel paragraphs x 2 questions x 9 pairs = 216 examples; batch 24 -> about 10 steps per epoch
XQA_TRAIN = ["train.batch_size=24", "data.max_seq_length=64", "data.doc_stride=24", "data.max_query_length=20"]


@pytest.fixture(scope="session")
def xqa_data(tmp_path_factory) -> Path:
    from skdcli.xqa.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("xqa") / "data"
    prepare_synthetic(out, seed=0, bert=XQA_BERT, **XQA_SIZES)
    return out
