"""Session fixtures of the retrieval recipe: a tiny random CLIP in HF format, the synthetic corpus
prepared through the CLI, and one short trained + indexed run (treat all as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke_json, sets

RETRIEVAL_FIXTURES = Path(__file__).parent / "fixtures" / "retrieval"
# A run short enough for the CLI tests; the tiny default itself is exercised by the slow tests.
RETRIEVAL_FAST = ["train.eval_every=40", "train.checkpoint_every=40", "train.warmup_steps=8", "train.log_every=5"]


def save_tiny_clip(folder: Path, words: list[str]) -> Path:
    """A randomly initialised 2-layer CLIP + word tokenizer + image processor, saved in HF format."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from skdcli.retrieval.encoder import build_word_tokenizer, standin_clip_config

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(words, 16)
    model = CLIPModel(standin_clip_config(len(tokenizer))).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(str(folder))
    return folder


# step -> the values the shared tiny run logs (tests/test_golden_trajectories.py). Moved on purpose by the
# special-token mask (issue 15, item 9); with model.mask_special_tokens=false the run logs the previous values.
GOLDEN_TRAJECTORY = {
    5: {
        "loss": 4.700468,
        "loss/dense": 2.973631,
        "loss/sparse": 4.694669,
        "loss/integrated": 4.075856,
        "loss/reg_q": 1.79631,
        "loss/reg_d": 1.922324,
        "weight/eta_q": 6.25e-05,
        "weight/eta_d": 6.25e-05,
        "loss/kd_dense": 8.576925,
        "loss/kd_sparse": 4.791274,
    },
    10: {
        "loss": 4.445305,
        "loss/dense": 2.99912,
        "loss/sparse": 4.316836,
        "loss/integrated": 4.198489,
        "loss/reg_q": 4.514448,
        "loss/reg_d": 4.896862,
        "weight/eta_q": 0.0003164063,
        "weight/eta_d": 0.0003164063,
        "loss/kd_dense": 7.347633,
        "loss/kd_sparse": 4.731804,
    },
    15: {
        "loss": 4.22764,
        "loss/dense": 3.333768,
        "loss/sparse": 3.887934,
        "loss/integrated": 4.294673,
        "loss/reg_q": 6.598871,
        "loss/reg_d": 7.105897,
        "weight/eta_q": 0.000765625,
        "weight/eta_d": 0.000765625,
        "loss/kd_dense": 5.852692,
        "loss/kd_sparse": 4.918325,
    },
    20: {
        "loss": 4.17532,
        "loss/dense": 3.692001,
        "loss/sparse": 3.647197,
        "loss/integrated": 4.312895,
        "loss/reg_q": 7.340076,
        "loss/reg_d": 7.85795,
        "weight/eta_q": 0.001,
        "weight/eta_d": 0.001,
        "loss/kd_dense": 5.143373,
        "loss/kd_sparse": 5.171696,
    },
    25: {
        "loss": 4.117806,
        "loss/dense": 3.571922,
        "loss/sparse": 3.521632,
        "loss/integrated": 4.250462,
        "loss/reg_q": 8.161507,
        "loss/reg_d": 8.339746,
        "weight/eta_q": 0.001,
        "weight/eta_d": 0.001,
        "loss/kd_dense": 5.085755,
        "loss/kd_sparse": 5.231779,
    },
    30: {
        "loss": 4.123207,
        "loss/dense": 3.577576,
        "loss/sparse": 3.542157,
        "loss/integrated": 4.272853,
        "loss/reg_q": 8.196836,
        "loss/reg_d": 8.430239,
        "weight/eta_q": 0.001,
        "weight/eta_d": 0.001,
        "loss/kd_dense": 5.101698,
        "loss/kd_sparse": 5.188172,
    },
}


@pytest.fixture(scope="session")
def retrieval_tiny_clip(tmp_path_factory) -> Path:
    words = "a woman wearing net on her head cutting cake large white sheet hair there is that marking with the back of chef's knife".split()
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), words)


@pytest.fixture(scope="session")
def retrieval_data(tmp_path_factory) -> Path:
    """The synthetic shapes corpus through `prep --source synthetic` (a briefly trained stand-in)."""
    out = tmp_path_factory.mktemp("retrieval") / "data"
    invoke_json("retrieval", "prep", "--source", "synthetic", "--out", out, "--standin-steps", "60")
    return out


@pytest.fixture(scope="session")
def retrieval_run(retrieval_data, tmp_path_factory) -> Path:
    """A finished 80-step SKD run with its Seismic index."""
    run = tmp_path_factory.mktemp("retrieval_runs") / "skd"
    invoke_json(
        "retrieval", "train", "--data", retrieval_data, "--run-dir", run, "--max-steps", "80", *sets(*RETRIEVAL_FAST)
    )
    invoke_json("retrieval", "index", "--run-dir", run)
    return run
