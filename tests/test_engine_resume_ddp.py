"""The engine's two hard promises, tested through the real CLI in subprocesses:

- exact resume: a run killed with SIGKILL and restarted with --resume ends with bit-identical
  weights (and the same loss trajectory) as an uninterrupted run;
- DDP: 2 gloo processes under torchrun follow the same loss trajectory as 1 process at the same
  global batch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, kill_mid_training, run_cli_subprocess, sets
from fixtures_asr_ctc import TINY_MODEL

STEPS = 16
TRAIN_SETS = sets(*TINY_MODEL, "train.eval_every=4", "train.keep_checkpoints=50")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors")


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tiny_corpus: Path, tmp_path: Path) -> None:
    common = ["asr-ctc", "train", "--data", str(tiny_corpus), "--max-steps", str(STEPS), "--checkpoint-every", "3"]
    straight = tmp_path / "straight"
    done = run_cli_subprocess(*common, "--run-dir", straight, *TRAIN_SETS)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    # wait for the 2nd checkpoint, then land somewhere inside the following steps
    kill_mid_training(
        "skdcli.asr_ctc.recipe:AsrCtcTask",
        [*common, "--run-dir", killed, *TRAIN_SETS],
        killed / "checkpoints" / "step_00000006",
        timeout=120,
        settle=0.08,
    )
    assert not (killed / "train_summary.json").exists()
    # A torn checkpoint from a kill mid-write must be ignored.
    (killed / "checkpoints" / ".tmp-step_00000099").mkdir()
    (killed / "checkpoints" / ".tmp-step_00000099" / "state.pt").write_bytes(b"torn")

    # Without --resume the half-finished run is protected.
    refused = run_cli_subprocess(*common, "--run-dir", killed, *TRAIN_SETS)
    assert refused.returncode != 0 and "--resume" in refused.stderr and "Traceback" not in refused.stderr

    resumed = run_cli_subprocess("asr-ctc", "train", "--run-dir", killed, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert 6 <= summary["resumed_from"] < STEPS and summary["steps"] == STEPS

    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert train_losses(straight) == train_losses(killed)  # same trajectory, no duplicate log lines


@pytest.mark.slow
def test_ddp_two_gloo_ranks_match_one_process(tiny_corpus: Path, tmp_path: Path) -> None:
    # Dropout and SpecAugment draw per-rank random numbers; switch them off to compare exactly.
    common = [
        "asr-ctc",
        "train",
        "--data",
        str(tiny_corpus),
        "--max-steps",
        "6",
        "--device",
        "cpu",
        *sets(*TINY_MODEL, "model.dropout=0.0", "model.spec_augment.enabled=false", "train.eval_every=0"),
    ]
    single = run_cli_subprocess(*common, "--run-dir", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "skdcli",
            *common,
            "--run-dir",
            str(tmp_path / "two"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = json.loads(ddp.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 7))
    for (_, l1), (_, l2) in zip(one, two):
        assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-5)
    w1 = load_file(tmp_path / "one" / "checkpoints" / "step_00000006" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "checkpoints" / "step_00000006" / "model.safetensors")
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-3, atol=1e-4)
