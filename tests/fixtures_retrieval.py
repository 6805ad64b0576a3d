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


GOLDEN_TRAJECTORY = {  # step -> the values the shared tiny run logs (tests/test_golden_trajectories.py)
    5: {'loss': 4.696418, 'loss/dense': 2.973627, 'loss/sparse': 4.684517, 'loss/integrated': 4.074428, 'loss/reg_q': 1.913139, 'loss/reg_d': 2.085753, 'weight/eta_q': 6.25e-05, 'weight/eta_d': 6.25e-05, 'loss/kd_dense': 8.569187, 'loss/kd_sparse': 4.788021},
    10: {'loss': 4.427818, 'loss/dense': 2.99899, 'loss/sparse': 4.27006, 'loss/integrated': 4.188907, 'loss/reg_q': 5.03695, 'loss/reg_d': 5.523515, 'weight/eta_q': 0.0003164063, 'weight/eta_d': 0.0003164063, 'loss/kd_dense': 7.31132, 'loss/kd_sparse': 4.72775},
    15: {'loss': 4.206447, 'loss/dense': 3.332741, 'loss/sparse': 3.817911, 'loss/integrated': 4.269854, 'loss/reg_q': 7.546407, 'loss/reg_d': 8.117684, 'weight/eta_q': 0.000765625, 'weight/eta_d': 0.000765625, 'loss/kd_dense': 5.805138, 'loss/kd_sparse': 4.946996},
    20: {'loss': 4.163071, 'loss/dense': 3.681264, 'loss/sparse': 3.604503, 'loss/integrated': 4.292828, 'loss/reg_q': 8.811611, 'loss/reg_d': 9.279927, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.124778, 'loss/kd_sparse': 5.194134},
    25: {'loss': 4.115829, 'loss/dense': 3.568409, 'loss/sparse': 3.514246, 'loss/integrated': 4.250988, 'loss/reg_q': 9.330686, 'loss/reg_d': 9.500486, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.088445, 'loss/kd_sparse': 5.221276},
    30: {'loss': 4.121553, 'loss/dense': 3.578958, 'loss/sparse': 3.531105, 'loss/integrated': 4.271347, 'loss/reg_q': 9.091517, 'loss/reg_d': 9.283417, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.097864, 'loss/kd_sparse': 5.189381},
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
    invoke_json("retrieval", "train", "--data", retrieval_data, "--run-dir", run, "--max-steps", "80",
                *sets(*RETRIEVAL_FAST))
    invoke_json("retrieval", "index", "--run-dir", run)
    return run
