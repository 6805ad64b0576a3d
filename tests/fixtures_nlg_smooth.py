"""Session fixtures of the nlg-smooth recipe and the shared text stack (imported by conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

# A model small enough that a step takes a few milliseconds on 2 CPU cores. A model this undertrained
# rarely says </s>: outputs are capped at 16 tokens (the default, fairseq-generate's 200, is for real runs).
NLG_TINY_MODEL = [
    "model.d_model=32",
    "model.num_heads=2",
    "model.ff_dim=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "train.batch_size=16",
    "train.warmup_steps=2",
    "train.log_every=1",
    "eval.batch_size=32",
    "eval.beam_size=2",
    "eval.max_len_b=16",
]


GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    # issue 14: the default model became fairseq's transformer_iwslt_de_en layout (post-LN, fairseq init, encoder
    # and decoder embeddings apart); the pre-issue-14 values below come back with model.arch=prenorm and
    # model.share_embeddings=true (tests/test_nlg_smooth_cli.py::test_the_prenorm_option_is_the_old_model)
    1: {
        "loss": 5.8944521,
        "loss/ce": 5.8790345,
        "loss/prior": 5.9185133,
        "weight/alpha": 0.4266193,
        "weight/prior_generation": 0.0,
    },
    2: {
        "loss": 5.9643798,
        "loss/ce": 5.999548,
        "loss/prior": 5.9186859,
        "weight/alpha": 0.4247119,
        "weight/prior_generation": 0.0,
    },
    3: {
        "loss": 5.9287415,
        "loss/ce": 5.924149,
        "loss/prior": 5.9354253,
        "weight/alpha": 0.4233602,
        "weight/prior_generation": 0.0,
    },
    4: {
        "loss": 5.7585726,
        "loss/ce": 5.6588335,
        "loss/prior": 5.8923573,
        "weight/alpha": 0.4324197,
        "weight/prior_generation": 0.0,
    },
    5: {
        "loss": 5.0814562,
        "loss/ce": 5.4168448,
        "loss/prior": 4.6495051,
        "weight/alpha": 0.438011,
        "weight/prior_generation": 1.0,
    },
    6: {
        "loss": 4.968184,
        "loss/ce": 5.2195535,
        "loss/prior": 4.6431756,
        "weight/alpha": 0.4407428,
        "weight/prior_generation": 1.0,
    },
}
PRE_ISSUE_14_TRAJECTORY = {
    1: {
        "loss": 6.019028,
        "loss/ce": 5.964724,
        "loss/prior": 6.120541,
        "weight/alpha": 0.381361,
        "weight/prior_generation": 0.0,
    },
    2: {
        "loss": 6.001895,
        "loss/ce": 5.957529,
        "loss/prior": 6.105669,
        "weight/alpha": 0.3846857,
        "weight/prior_generation": 0.0,
    },
    3: {
        "loss": 5.949996,
        "loss/ce": 5.871117,
        "loss/prior": 6.083673,
        "weight/alpha": 0.3898479,
        "weight/prior_generation": 0.0,
    },
    4: {
        "loss": 5.81549,
        "loss/ce": 5.657757,
        "loss/prior": 6.052133,
        "weight/alpha": 0.3966264,
        "weight/prior_generation": 0.0,
    },
    5: {
        "loss": 5.003376,
        "loss/ce": 5.444645,
        "loss/prior": 4.254125,
        "weight/alpha": 0.4067644,
        "weight/prior_generation": 1.0,
    },
    6: {
        "loss": 4.964837,
        "loss/ce": 5.400015,
        "loss/prior": 4.244982,
        "weight/alpha": 0.4087107,
        "weight/prior_generation": 1.0,
    },
}


@pytest.fixture(scope="session")
def nlg_smooth_corpus(tmp_path_factory) -> Path:
    """The synthetic toy pair (400/24/24 sentences), prepared with a joint sentencepiece model."""
    from skdcli.text.parallel import prepare_parallel

    out = tmp_path_factory.mktemp("nlg_corpus") / "prepared"
    prepare_parallel("synthetic", None, out, vocab_size=200, synthetic={"n_train": 400, "n_valid": 24, "n_test": 24})
    return out


@pytest.fixture(scope="session")
def nlg_smooth_run(nlg_smooth_corpus, tmp_path_factory) -> Path:
    """A finished 12-step ALS-SK run with two validations (the prior is in use after the first).
    Shared by the eval / export / translate tests; treat as read-only."""
    run_dir = tmp_path_factory.mktemp("nlg_runs") / "als"
    invoke_json(
        "nlg-smooth",
        "train",
        "--data",
        nlg_smooth_corpus,
        "--run-dir",
        run_dir,
        "--max-steps",
        "12",
        *sets(*NLG_TINY_MODEL, "train.eval_every=4", "train.checkpoint_every=6", "eval.valid_decode_max=8"),
    )
    return run_dir


@pytest.fixture(scope="session")
def nlg_smooth_export(nlg_smooth_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nlg_export") / "export"
    invoke_json("nlg-smooth", "export", "--run-dir", nlg_smooth_run, "--out", out)
    return out
