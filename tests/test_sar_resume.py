"""kill -9 and --resume of a DRRNet-SKD run are bit-exact, including the AWA state, the offline teacher
(a snapshot refreshed at every generation) and the online last-iteration cache (same method as
tests/test_engine_resume_ddp.py: SIGKILL mid-training, resume, compare with an uninterrupted run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli_subprocess, sets
from fixtures_sar import SAR_TINY

SLOW_CLI = """
import sys, time
from skdcli.sar import recipe
original = recipe.SarTask.compute_loss
def slow(self, *args):
    time.sleep(0.05)
    return original(self, *args)
recipe.SarTask.compute_loss = slow
from skdcli.cli import main
sys.argv = ["skd", *sys.argv[1:]]
main()
"""

STEPS = 14
TRAIN_SETS = sets(*SAR_TINY, "train.eval_every=4", "train.keep_checkpoints=50")


def train_losses(run_dir: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["weight/on"]) for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(sar_data: Path, tmp_path: Path) -> None:
    common = ["sar", "train", "--data", str(sar_data), "--max-steps", str(STEPS), "--checkpoint-every", "3"]
    straight = tmp_path / "straight"
    done = run_cli_subprocess(*common, "--run-dir", straight, *TRAIN_SETS)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *common, "--run-dir", str(killed), *TRAIN_SETS],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_00000006").exists():  # past the first generation (5 steps)
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.12)  # land inside the following steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_summary.json").exists()

    resumed = run_cli_subprocess("sar", "train", "--run-dir", killed, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert 6 <= summary["resumed_from"] < STEPS and summary["steps"] == STEPS

    final = f"step_{STEPS:08d}"
    a, b = (load_file(r / "checkpoints" / final / "model.safetensors") for r in (straight, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (
        torch.load(r / "checkpoints" / final / "state.pt", weights_only=True)["teachers"] for r in (straight, killed)
    )
    assert sa["awa"] == sb["awa"] and sa["awa"]["updates"] == STEPS
    assert sa["offline"]["generation"] == sb["offline"]["generation"] == 2
    assert all(torch.equal(sa["offline"]["model"][k], sb["offline"]["model"][k]) for k in sa["offline"]["model"])
    assert torch.equal(sa["online"]["indices"], sb["online"]["indices"])
    assert torch.equal(sa["online"]["logits"], sb["online"]["logits"])
    assert train_losses(straight) == train_losses(killed)  # same losses and AWA weights, no duplicate lines
