"""Session fixtures of the xqa recipe: one small synthetic corpus (the real SQuAD / XQuAD / MLQA
layouts, prepared through the real readers, with a WordPiece tokenizer trained by HF `tokenizers`
and a random tiny `BertForQuestionAnswering` saved in HF format), one finished tiny SKD + mAP@k run
(`xqa_run`, pinned by GOLDEN_TRAJECTORY) and its export, shared by every xqa test (read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# Small enough that prep takes about a second and a training step a few milliseconds.
XQA_SIZES = {
    "squad_paragraphs": 24,
    "xquad_paragraphs": 12,
    "dev_paragraphs": 2,
    "test_paragraphs": 2,
    "questions_per_paragraph": 2,
}
XQA_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
# 12 parallel paragraphs x 2 questions x 9 language pairs = 216 examples; batch 24 -> ~10 steps per epoch
XQA_TRAIN = [
    "train.batch_size=24",
    "data.max_seq_length=64",
    "data.doc_stride=24",
    "data.max_query_length=20",
    "train.log_every=1",
    "train.lr=5e-3",
]

GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    1: {
        "loss": 4.1941018,
        "loss/ce": 4.1937943,
        "loss/kl": 0.000692357,
        "loss/kl_start": 0.000798237,
        "loss/kl_end": 0.000586477,
        "weight/ce": 1.0,
        "weight/kl": 0.4444692,
    },
    2: {
        "loss": 4.0127721,
        "loss/ce": 4.0114341,
        "loss/kl": 0.0031263,
        "loss/kl_start": 0.0034934,
        "loss/kl_end": 0.0027592,
        "weight/ce": 1.0,
        "weight/kl": 0.4279431,
    },
    3: {
        "loss": 3.9076273,
        "loss/ce": 3.9041877,
        "loss/kl": 0.0078563,
        "loss/kl_start": 0.0086541,
        "loss/kl_end": 0.0070586,
        "weight/ce": 1.0,
        "weight/kl": 0.4378059,
    },
    4: {
        "loss": 3.7960577,
        "loss/ce": 3.7888117,
        "loss/kl": 0.0138835,
        "loss/kl_start": 0.0143855,
        "loss/kl_end": 0.0133815,
        "weight/ce": 1.0,
        "weight/kl": 0.5219246,
    },
    5: {
        "loss": 3.6525578,
        "loss/ce": 3.6422009,
        "loss/kl": 0.0210611,
        "loss/kl_start": 0.021074,
        "loss/kl_end": 0.0210483,
        "weight/ce": 1.0,
        "weight/kl": 0.4917493,
    },
    6: {
        "loss": 3.6125686,
        "loss/ce": 3.5984824,
        "loss/kl": 0.0266945,
        "loss/kl_start": 0.0273823,
        "loss/kl_end": 0.0260066,
        "weight/ce": 1.0,
        "weight/kl": 0.5276869,
    },
}


@pytest.fixture(scope="session")
def xqa_data(tmp_path_factory) -> Path:
    from skdcli.xqa.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("xqa") / "data"
    prepare_synthetic(out, seed=0, bert=XQA_BERT, **XQA_SIZES)
    return out


@pytest.fixture(scope="session")
def xqa_run(xqa_data: Path, tmp_path_factory) -> Path:
    """A finished 6-step SKD + mAP@k run (the default system) with dev evaluations at steps 3 and 6."""
    run_dir = tmp_path_factory.mktemp("xqa_runs") / "skd_map"
    invoke_json(
        "xqa",
        "train",
        "--data",
        xqa_data,
        "--run-dir",
        run_dir,
        "--max-steps",
        "6",
        *sets(*XQA_TRAIN, "train.eval_every=3", "train.checkpoint_every=3"),
    )
    return run_dir


@pytest.fixture(scope="session")
def xqa_export(xqa_run: Path) -> Path:
    invoke_json("xqa", "export", "--run-dir", xqa_run)
    return xqa_run / "export"
