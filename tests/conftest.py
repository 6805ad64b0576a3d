"""Shared fixtures: one tiny spoken corpus and one tiny trained run per test session.

The corpus is real speech in the LibriSpeech layout, written by espeak-ng (installed by .ci/run),
and prepared through the real `librispeech` reader. Everything that can share it does, so the
suite stays within its time budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skdcli.cli import app

REPO = Path(__file__).resolve().parent.parent

# A model small enough that a training step takes a few milliseconds on 2 CPU cores.
TINY_MODEL = ["model.d_model=32", "model.num_layers=2", "model.student_layer=1", "model.num_heads=2",
              "model.ff_dim=64", "model.conv_channels=8", "train.batch_size=8", "train.warmup_steps=2",
              "train.log_every=1"]


def sets(*items: str) -> list[str]:
    """`--set a=b --set c=d ...` as a CLI argument list."""
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args: str):
    """Run the CLI in-process; stdout and stderr are captured separately."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def invoke_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got: {result.stdout!r}"
    return json.loads(lines[0])


def run_cli_subprocess(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skdcli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """48/8/8 synthetic utterances, prepared with the char tokenizer."""
    from skdcli.asr_ctc.data import generate_synthetic_corpus, prepare_dataset

    root = tmp_path_factory.mktemp("corpus")
    raw = generate_synthetic_corpus(root / "raw", n_train=48, n_dev=8, n_test=8, seed=0)
    prepare_dataset("librispeech", raw, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def trained_run(tiny_corpus, tmp_path_factory) -> Path:
    """A finished 6-step SKD run (shared by the eval / export / transcribe tests; treat as read-only)."""
    run_dir = tmp_path_factory.mktemp("runs") / "skd"
    invoke_json("asr-ctc", "train", "--data", tiny_corpus, "--run-dir", run_dir, "--max-steps", "6",
                *sets(*TINY_MODEL, "train.eval_every=3", "train.checkpoint_every=3"))
    return run_dir


# Each recipe keeps its session fixtures in tests/fixtures_<task>.py; importing them here makes
# them visible to every test module (the smoke tests name them in recipes/<task>/smoke.yaml) and
# defines each exactly once, so a session fixture is built once per test session.
from fixtures_sleep import *  # noqa: E402,F401,F403
from fixtures_retrieval import *  # noqa: E402,F401,F403
from fixtures_nlp_embed import *  # noqa: E402,F401,F403
from fixtures_nlg_smooth import *  # noqa: E402,F401,F403
from fixtures_xqa import *  # noqa: E402,F401,F403
