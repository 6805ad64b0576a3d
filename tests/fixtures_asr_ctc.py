"""Session fixtures of the asr-ctc recipe: one tiny spoken corpus and one tiny trained run per test session.

The corpus is real speech in the LibriSpeech layout, written by espeak-ng (installed by .ci/run),
and prepared through the real `librispeech` reader. Everything that can share it does, so the
suite stays within its time budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# A model small enough that a training step takes a few milliseconds on 2 CPU cores.
TINY_MODEL = [
    "model.d_model=32",
    "model.num_layers=2",
    "model.student_layer=1",
    "model.num_heads=2",
    "model.ff_dim=64",
    "model.conv_channels=8",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=1",
]


GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    1: {
        "loss": 5.785115,
        "loss/ctc_teacher": 5.673018,
        "loss/ctc_student": 5.719377,
        "weight/alpha": 0.3,
        "loss/kd": 0.3272976,
    },
    2: {
        "loss": 6.638366,
        "loss/ctc_teacher": 6.584392,
        "loss/ctc_student": 6.426723,
        "weight/alpha": 0.3,
        "loss/kd": 0.3375814,
    },
    3: {
        "loss": 7.83673,
        "loss/ctc_teacher": 7.707072,
        "loss/ctc_student": 7.821929,
        "weight/alpha": 0.3,
        "loss/kd": 0.3173378,
    },
    4: {
        "loss": 6.134837,
        "loss/ctc_teacher": 5.831862,
        "loss/ctc_student": 6.531204,
        "weight/alpha": 0.3,
        "loss/kd": 0.3105729,
    },
    5: {
        "loss": 7.626322,
        "loss/ctc_teacher": 7.159059,
        "loss/ctc_student": 8.429891,
        "weight/alpha": 0.3,
        "loss/kd": 0.2867104,
    },
    6: {
        "loss": 9.025524,
        "loss/ctc_teacher": 7.979171,
        "loss/ctc_student": 11.13577,
        "weight/alpha": 0.3,
        "loss/kd": 0.3312473,
    },
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """48/8/8 synthetic utterances, prepared with the char tokenizer."""
    from skdcli.asr_ctc.data import generate_synthetic_corpus, prepare_dataset

    root = tmp_path_factory.mktemp("corpus")
    raw = generate_synthetic_corpus(root / "raw", n_train=48, n_dev=8, n_test=8, seed=0)
    prepare_dataset("librispeech", raw, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def asr_ctc_run(tiny_corpus, tmp_path_factory) -> Path:
    """A finished 6-step SKD run (shared by the eval / export / transcribe tests; treat as read-only)."""
    run_dir = tmp_path_factory.mktemp("runs") / "skd"
    invoke_json(
        "asr-ctc",
        "train",
        "--data",
        tiny_corpus,
        "--run-dir",
        run_dir,
        "--max-steps",
        "6",
        *sets(*TINY_MODEL, "train.eval_every=3", "train.checkpoint_every=3"),
    )
    return run_dir
