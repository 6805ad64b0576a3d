"""recipes/common.sh, the part every recipes/<task>/run.sh shares, exercised through a real run.sh with a
stub `skd` that records its arguments: options and their environment twins, stage gating, skipping
finished runs, resuming unfinished ones, the per-seed loop, the torchrun launcher and atomic results."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

# A stand-in for `skd`: logs its arguments; `train` leaves a finished run (an unfinished one when the
# seed is 13), `eval` prints a JSON object.
STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
args=("$@")
for ((i = 0; i < $#; i++)); do [[ ${args[i]} == --run-dir ]] && rd=${args[i+1]}; done
case "$2" in
  train) mkdir -p "$rd"; touch "$rd/config.yaml"; [[ " $* " == *" --seed 13 "* ]] || echo '{}' > "$rd/train_summary.json" ;;
  eval) echo '{"ppl": 1.0}' ;;
esac
"""


@pytest.fixture()
def stub(tmp_path: Path) -> dict[str, str]:
    skd = tmp_path / "bin" / "skd"
    skd.parent.mkdir()
    skd.write_text(STUB)
    skd.chmod(0o755)
    return {**os.environ, "SKD": str(skd), "STUB_LOG": str(tmp_path / "calls.log")}


def run_sh(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "recipes" / "nlp_embed" / "run.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


def calls(env: dict) -> list[str]:
    log = Path(env["STUB_LOG"])
    return log.read_text().splitlines() if log.is_file() else []


def test_stages_seeds_skip_and_resume(stub: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["--stage", "1", "--stop-stage", "2", "--runs", str(runs), "--data", str(tmp_path / "d"), "--device", "cpu"]
    first = run_sh({**stub, "SEEDS": "0 1"}, *args, "--systems", "skd ce", "--train-args", "--set train.lr=1")
    assert first.returncode == 0, first.stderr
    trains = [c for c in calls(stub) if c.startswith("nlp-embed train")]
    assert len(trains) == 4 and all("--set train.lr=1" in c and "--device cpu" in c for c in trains)
    assert any("--baseline" in c and "ce_seed1" in c for c in trains)  # the ce system is --baseline
    assert sorted(p.name for p in (runs / "results").iterdir()) == [
        "ce_seed0.test.eval.json",
        "ce_seed1.test.eval.json",
        "skd_seed0.test.eval.json",
        "skd_seed1.test.eval.json",
    ]
    assert not list((runs / "results").glob("*.tmp"))

    Path(stub["STUB_LOG"]).unlink()
    again = run_sh({**stub, "SEEDS": "0 1"}, *args, "--systems", "skd ce", "--stop-stage", "1")
    assert again.returncode == 0 and calls(stub) == []  # finished runs are skipped
    assert "finished run, skipping" in again.stderr

    unfinished = run_sh({**stub, "SEEDS": "13"}, *args, "--systems", "skd")
    assert unfinished.returncode == 0 and "no finished run" in unfinished.stderr  # stage 2 skips it
    resumed = run_sh({**stub, "SEEDS": "13"}, *args, "--systems", "skd", "--stop-stage", "1")
    assert resumed.returncode == 0 and calls(stub)[-1].endswith("--resume --device cpu")


def test_options_help_and_errors(stub: dict, tmp_path: Path) -> None:
    usage = run_sh(stub, "--help")
    assert usage.returncode == 0 and "Usage" in usage.stdout and "set -euo" not in usage.stdout
    for bad, message in (
        (["--no-such-option", "1"], "unknown option '--no-such-option'"),
        (["--stage", "two"], "--stage/--stop-stage take integers"),
        (["--runs"], "option '--runs' needs a value"),
        (["stray"], "unknown argument 'stray'"),
    ):
        result = run_sh(stub, *bad)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    # the environment twin works and a flag wins over it
    env = {**stub, "SEEDS": "5", "SYSTEMS": "ls"}
    assert (
        run_sh(env, "--stage", "1", "--stop-stage", "1", "--runs", str(tmp_path / "r"), "--seeds", "7").returncode == 0
    )
    assert [c.split("--run-dir ")[1].split()[0] for c in calls(env)] == [str(tmp_path / "r" / "ls_seed7")]


def test_multi_gpu_training_goes_through_torchrun(stub: dict, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "torchrun"
    fake.write_text('#!/usr/bin/env bash\necho "torchrun $*" >> "$STUB_LOG"\n')
    fake.chmod(0o755)
    env = {**stub, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    result = run_sh(
        env, "--stage", "1", "--stop-stage", "1", "--runs", str(tmp_path / "r"), "--ngpu", "4", "--systems", "skd"
    )
    assert result.returncode == 0, result.stderr
    assert calls(env)[0].startswith("torchrun --standalone --nproc-per-node 4 -m skdcli nlp-embed train")
