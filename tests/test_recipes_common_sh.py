"""recipes/common.sh, the part every recipes/<task>/run.sh shares, exercised through a real run.sh with a
stub `skd` that records its arguments: options and their environment twins, stage gating, skipping
finished runs, resuming unfinished ones, the per-seed loop, the torchrun launcher, atomic results, and the
results table every run.sh ends with (results_table, each recipe's on results shaped like its eval's)."""

from __future__ import annotations

import json
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
  eval) echo '{"ppl": 1.0, "nll": 0.0, "ece": 0.01, "mce": 0.02, "accuracy": 0.5}' ;;
esac
"""


@pytest.fixture()
def stub(tmp_path: Path) -> dict[str, str]:
    skd = tmp_path / "bin" / "skd"
    skd.parent.mkdir()
    skd.write_text(STUB)
    skd.chmod(0o755)
    return {**os.environ, "SKD": str(skd), "STUB_LOG": str(tmp_path / "calls.log")}


def run_sh(env: dict, *args: str, recipe: str = "nlp_embed") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "recipes" / recipe / "run.sh"), *args],
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


def test_the_table_stage_after_training_and_eval(stub: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["--runs", str(runs), "--data", str(tmp_path / "d"), "--device", "cpu", "--systems", "skd ce"]
    result = run_sh({**stub, "SEEDS": "0 1"}, "--stage", "1", *args)  # stage 3 exports, stage 4 the table
    assert result.returncode == 0, result.stderr
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in result.stdout.splitlines()[:4]]
    assert rows[0] == ["system", "n", "test ppl", "NLL", "ECE %", "MCE %", "acc %"]
    assert rows[2:] == [
        [system, "2", "1.00 ± 0.00", "0.00 ± 0.00", "1.00 ± 0.00", "2.00 ± 0.00", "50.00 ± 0.00"]
        for system in ("skd", "ce")
    ]  # the order the script asks for, not the files'

    for f in (runs / "results").iterdir():
        f.unlink()
    empty = run_sh(stub, "--stage", "4", "--runs", str(runs))
    assert (
        empty.returncode != 0 and f"error: no files matching '*.test.eval.json' in {runs / 'results'}" in empty.stderr
    )


def _write(folder: Path, files: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        (folder / name).write_text(json.dumps(obj))


def _dd_rows(top1: float, references: bool) -> dict:
    rows = [{"system": "generator", "arch": "convnet", "ipc": 10, "mode": "fixed", "top1_mean": top1}]
    if references:
        rows.append(
            {"system": "full real", "arch": "convnet", "ipc": None, "mode": "full train split", "top1_mean": 85}
        )
    return {"rows": rows}


_T2I = {
    s: {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75, "MRR@10": 0.4}
    for s in ("dense", "sparse", "integrated_cos", "integrated")
}
_SLEEP = {"accuracy": 0.8, "macro_f1": 0.7, "kappa": 0.6, "per_class_f1": dict(W=0.9, N1=0.4, N2=0.8, N3=0.7, REM=0.75)}
_NLG = {"bleu": 30.0, "bleu_sacre": 29.0, "chrf": 55.0, "nll": 2.0, "ece": 0.05, "mce": 0.25}
_ASR = {"head": "teacher", "decoder": "greedy", "sets": {"test-clean": {"wer": 0.2, "cer": 0.1, "wer_teacher": 0.1}}}

# recipe, its table stage, its results files (shaped like its eval's JSON), lines the table must hold
TABLES = [
    (
        "nlg_smooth",
        4,
        {"ce_seed0.eval.json": _NLG, "ce_seed1.eval.json": {**_NLG, "bleu": 32.0}},
        ["| ce     |   2 | 31.00 ± 1.41 | 29.00 ± 0.00 |", "sacreBLEU = detokenized 13a."],
    ),
    (
        "retrieval",
        5,
        {"skd_seed42.eval.json": {"t2i": _T2I}, "skd_seed42.compare.json": {}},
        [
            "| skd    | dense      |   1 | 25.00 ± 0.00 | 50.00 ± 0.00 | 75.00 ± 0.00 | 40.00 ± 0.00 |",
            "| skd    | integrated |",
        ],
    ),
    (
        "sleep",
        4,
        {"sst_seed0.json": _SLEEP, "sst_seed1.json": {**_SLEEP, "kappa": 0.8}},
        ["| sst    |   2 | 80.0 ± 0.0 | 70.0 ± 0.0 | 70.0 ± 14.1 | 90.0 ± 0.0 | 40.0 ± 0.0 |", "(cross-dataset)"],
    ),
    (
        "sar",
        3,
        {"resnet18__drrnet_seed0.json": {"method": "drrnet", "backbone": "resnet18", "accuracy": 0.9}},
        ["| method |         resnet18 |", "| drrnet | 90.0 ± 0.0 (n=1) |", "n per cell"],
    ),
    (
        "dataset_distill",
        5,
        {"skd_seed0.json": _dd_rows(50.0, True), "skd_seed1.json": _dd_rows(52.0, False)},
        ["| skd | generator | convnet | 10  | fixed            |   2 | 51.00 ± 1.41 |", "| skd | full real |"],
    ),
    (
        "asr_ctc",
        6,
        {"skd_seed0.all.eval.json": _ASR},
        ["| skd    | test-clean |   1 | 20.00 ± 0.00 | 10.00 ± 0.00 |            - |", "standard InterCTC"],
    ),
]


@pytest.mark.parametrize("recipe, stage, files, expected", TABLES, ids=[t[0] for t in TABLES])
def test_each_recipe_table_stage(tmp_path: Path, recipe: str, stage: int, files: dict, expected: list[str]) -> None:
    runs = tmp_path / "runs"
    _write(runs / "results", files)
    result = run_sh(
        dict(os.environ), "--stage", str(stage), "--stop-stage", str(stage), "--runs", str(runs), recipe=recipe
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout, result.stdout
    if recipe == "sar":
        assert (runs / "results" / "table.md").read_text() == result.stdout
