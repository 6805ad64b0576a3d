"""Session fixtures of the nlp-embed tests: one synthetic LM corpus, one tiny trained run.

Imported by tests/conftest.py (and by the nlp-embed test files directly until then)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, invoke_json, sets

NLP_EMBED_WIKITEXT = REPO / "tests" / "fixtures" / "nlp_embed" / "wikitext-2"

# A model small enough that a step takes about a millisecond on 2 CPU cores.
NLP_EMBED_TINY = [
    "model.d_embed=16",
    "model.d_hidden=16",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.log_every=1",
    "kd.refresh_every=2",
    "kd.topk=4",
    "kd.beta=0.5",
]


GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    # issue 14: training became truncated BPTT (data.bptt_mode=stateful: the train stream in batch_size columns,
    # windows in time order, the LSTM state carried); the pre-issue-14 values below come back with
    # data.bptt_mode=windows (tests/test_nlp_embed_bptt.py::test_the_windows_option_is_the_old_training)
    1: {"loss": 4.600123, "loss/ce": 4.601472, "loss/soft": 4.598775, "weight/beta": 0.5},
    2: {"loss": 4.593372, "loss/ce": 4.594076, "loss/soft": 4.592669, "weight/beta": 0.5},
    3: {"loss": 4.595733, "loss/ce": 4.596140, "loss/soft": 4.595325, "weight/beta": 0.5},
    4: {"loss": 4.602495, "loss/ce": 4.603155, "loss/soft": 4.601835, "weight/beta": 0.5},
    5: {"loss": 4.597488, "loss/ce": 4.597559, "loss/soft": 4.597416, "weight/beta": 0.5},
    6: {"loss": 4.604141, "loss/ce": 4.604108, "loss/soft": 4.604173, "weight/beta": 0.5},
}
PRE_ISSUE_14_TRAJECTORY = {
    1: {"loss": 4.604629, "loss/ce": 4.605237, "loss/soft": 4.60402, "weight/beta": 0.5},
    2: {"loss": 4.61592, "loss/ce": 4.617612, "loss/soft": 4.614228, "weight/beta": 0.5},
    3: {"loss": 4.60844, "loss/ce": 4.609712, "loss/soft": 4.607169, "weight/beta": 0.5},
    4: {"loss": 4.613212, "loss/ce": 4.614515, "loss/soft": 4.611909, "weight/beta": 0.5},
    5: {"loss": 4.60577, "loss/ce": 4.605738, "loss/soft": 4.605803, "weight/beta": 0.5},
    6: {"loss": 4.60444, "loss/ce": 4.604572, "loss/soft": 4.604308, "weight/beta": 0.5},
}


@pytest.fixture(scope="session")
def nlp_embed_corpus(tmp_path_factory) -> Path:
    """The synthetic class-based Markov corpus (96 words in 8 classes), prepared."""
    from skdcli.text.lm_corpus import prepare_lm_corpus

    out = tmp_path_factory.mktemp("nlp_embed") / "synthetic"
    prepare_lm_corpus("synthetic", None, out, seed=0)
    return out


@pytest.fixture(scope="session")
def nlp_embed_run(nlp_embed_corpus, tmp_path_factory) -> Path:
    """A finished 8-step SKD run (shared by the eval / export / sample / neighbours tests; read-only)."""
    run_dir = tmp_path_factory.mktemp("nlp_embed_runs") / "skd"
    invoke_json(
        "nlp-embed",
        "train",
        "--data",
        nlp_embed_corpus,
        "--run-dir",
        run_dir,
        "--max-steps",
        "8",
        *sets(*NLP_EMBED_TINY, "train.eval_every=4", "train.checkpoint_every=4"),
    )
    return run_dir


@pytest.fixture(scope="session")
def nlp_embed_nmt_corpus(tmp_path_factory) -> Path:
    """A small synthetic parallel dataset (the shared toy language pair, IWSLT layout), prepared."""
    from skdcli.text.parallel import prepare_parallel

    out = tmp_path_factory.mktemp("nlp_embed_nmt") / "pair"
    prepare_parallel("synthetic", None, out, vocab_size=200, synthetic={"n_train": 160, "n_valid": 16, "n_test": 16})
    return out
