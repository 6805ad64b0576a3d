"""kill -9 during the second generation, then --resume: bit-identical weights, the same loss and
coefficient trajectory, and the same teacher (the student of the first epoch's end) as an
uninterrupted run (the way tests/test_engine_resume_ddp.py tests the engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import kill_mid_training, run_cli_subprocess, sets
from fixtures_xqa import XQA_TRAIN
from skdcli.engine.rundir import RunDir


def trajectory(run_dir: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["map_at_k"], r["teacher/generation"]) for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_sigkill_in_generation_two_then_resume_is_bit_identical(xqa_data: Path, tmp_path: Path) -> None:
    args = [
        "xqa",
        "train",
        "--data",
        str(xqa_data),
        "--checkpoint-every",
        "3",
        *sets(*XQA_TRAIN, "epochs=2", "train.keep_checkpoints=50"),
    ]
    straight = tmp_path / "straight"
    done = run_cli_subprocess(*args, "--run-dir", straight)
    assert done.returncode == 0, done.stderr
    steps = json.loads((straight / "train_summary.json").read_text())["steps"]
    per_epoch = steps // 2
    kill_after = (per_epoch // 3 + 1) * 3  # the first checkpoint inside the second generation

    killed = tmp_path / "killed"
    kill_mid_training(  # then land inside the following steps
        "skdcli.xqa.task:XqaTask", [*args, "--run-dir", killed], killed / "checkpoints" / f"step_{kill_after:08d}"
    )
    assert not (killed / "train_summary.json").exists()

    resumed = run_cli_subprocess("xqa", "train", "--run-dir", killed, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert per_epoch < summary["resumed_from"] < steps and summary["steps"] == steps
    assert (
        RunDir.load_state(killed / "checkpoints" / f"step_{summary['resumed_from']:08d}")["teachers"]["snapshot"][
            "generation"
        ]
        == 1
    )  # resumed in the second generation

    last = f"step_{steps:08d}"
    a, b = (load_file(r / "checkpoints" / last / "model.safetensors") for r in (straight, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = (RunDir.load_state(r / "checkpoints" / last)["teachers"]["snapshot"] for r in (straight, killed))
    assert ta["generation"] == tb["generation"] == 2
    assert all(torch.equal(ta["model"][k], tb["model"][k]) for k in ta["model"])
    assert trajectory(straight) == trajectory(killed)  # losses, coefficients, generations; no duplicate lines
