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
        "loss": 4.1775217,
        "loss/ce": 4.1771789,
        "loss/kl": 0.000676432,
        "loss/kl_start": 0.000809362,
        "loss/kl_end": 0.000543502,
        "weight/ce": 1.0,
        "weight/kl": 0.5070271,
    },
    2: {
        "loss": 4.0361671,
        "loss/ce": 4.034462,
        "loss/kl": 0.0032598,
        "loss/kl_start": 0.0034675,
        "loss/kl_end": 0.0030521,
        "weight/ce": 1.0,
        "weight/kl": 0.5231481,
    },
    3: {
        "loss": 3.9362495,
        "loss/ce": 3.9327755,
        "loss/kl": 0.007455,
        "loss/kl_start": 0.0076757,
        "loss/kl_end": 0.0072344,
        "weight/ce": 1.0,
        "weight/kl": 0.465997,
    },
    4: {
        "loss": 3.8851154,
        "loss/ce": 3.8786569,
        "loss/kl": 0.0127947,
        "loss/kl_start": 0.0126757,
        "loss/kl_end": 0.0129137,
        "weight/ce": 1.0,
        "weight/kl": 0.5047867,
    },
    5: {
        "loss": 3.712229,
        "loss/ce": 3.70455,
        "loss/kl": 0.016488,
        "loss/kl_start": 0.0165685,
        "loss/kl_end": 0.0164075,
        "weight/ce": 1.0,
        "weight/kl": 0.4657325,
    },
    6: {
        "loss": 3.6829712,
        "loss/ce": 3.6725488,
        "loss/kl": 0.021309,
        "loss/kl_start": 0.0205444,
        "loss/kl_end": 0.0220735,
        "weight/ce": 1.0,
        "weight/kl": 0.4891121,
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
