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
