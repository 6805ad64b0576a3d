"""kill -9 and --resume of a DRRNet-SKD run are bit-exact, including the AWA state, the offline teacher
(a snapshot refreshed at every generation) and the online last-iteration cache (same method as
tests/test_engine_resume_ddp.py: SIGKILL mid-training, resume, compare with an uninterrupted run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import kill_mid_training, run_cli_subprocess, sets
from fixtures_sar import SAR_TINY

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
    # past the first generation (5 steps), then inside the following steps
    kill_mid_training(
        "skdcli.sar.recipe:SarTask",
        [*common, "--run-dir", killed, *TRAIN_SETS],
        killed / "checkpoints" / "step_00000006",
        settle=0.12,
    )
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
