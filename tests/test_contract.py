"""The CLI contract, checked once for every registered recipe (a new recipe gets these by registering):
its help lists the stages, `--json` prints exactly one object, bad input is a one-line error, a finished
run is never overwritten without --overwrite, --resume refuses config changes, and `skd --help` builds
without importing torch.

Each recipe's finished tiny run is the ``<task>_run`` session fixture of tests/fixtures_<task>.py, the run
its golden trajectory pins, so these checks cost no extra training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, assert_one_line_error, invoke
from skdcli.cli import RECIPE_APPS
from skdcli.cli import app as skd_app
from skdcli.engine.errors import SkdError
from test_golden_trajectories import golden_of, run_fixture

TASKS = sorted(RECIPE_APPS)
SHARED_STAGES = ("prep", "train", "eval", "export", "run")


def finished_run(task: str, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    run = Path(request.getfixturevalue(run_fixture(task)))
    data = Path(json.loads((run / "provenance.json").read_text())["data_dir"])
    return run, data


def assert_contract_error(result, *needles: str) -> None:
    assert_one_line_error(result, *needles, exit_code=2)  # 2: bad input


@pytest.mark.parametrize("task", TASKS)
def test_every_recipe_has_a_run_fixture_and_a_golden_trajectory(task: str, request: pytest.FixtureRequest) -> None:
    assert golden_of(task), f"tests/fixtures_{task.replace('-', '_')}.py needs a GOLDEN_TRAJECTORY"
    finished_run(task, request)  # the <task>_run fixture exists and finished


@pytest.mark.parametrize("task", TASKS)
def test_tiny_yaml_is_the_embedded_default(task: str) -> None:
    # recipes/<task>/tiny.yaml shows the whole embedded default a bare `train` / `run` uses, so it must be it
    from skdcli.engine.config import build_config

    config_class = RECIPE_APPS[task].recipe.load_hooks().config_class
    tiny = REPO / "recipes" / task.replace("-", "_") / "tiny.yaml"
    assert tiny.is_file(), f"{tiny} is missing"
    assert build_config(config_class, tiny) == config_class()


@pytest.mark.parametrize("task", TASKS)
def test_help_lists_the_stages_and_the_shared_options(task: str) -> None:
    listing = invoke(task, "--help")
    assert listing.exit_code == 0
    for stage in SHARED_STAGES:
        assert f" {stage} " in listing.stdout, f"skd {task} --help lacks {stage}"
    train = invoke(task, "train", "--help").stdout
    for option in (
        "--data",
        "--run-dir",
        "--config",
        "--set",
        "--baseline",
        "--seed",
        "--max-steps",
        "--checkpoint-every",
        "--resume",
        "--device",
        "--overwrite",
        "--json",
        "--debug",
    ):
        assert option in train, f"skd {task} train --help lacks {option}"
    assert f"runs/{task}" in train  # the default run directory


@pytest.mark.parametrize("task", TASKS)
def test_json_prints_exactly_one_object(task: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    run, _ = finished_run(task, request)
    # a subprocess, so nothing but the CLI itself can write to stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skdcli",
            task,
            "export",
            "--run-dir",
            str(run),
            "--out",
            str(tmp_path / "export"),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["task"] == task and result["parity_max_abs_diff"] < 1e-3
    again = invoke(task, "export", "--run-dir", run, "--out", tmp_path / "export")
    assert_contract_error(again, str(tmp_path / "export"), "--overwrite")


@pytest.mark.parametrize("task", TASKS)
def test_bad_input_is_a_one_line_error(task: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    run, data = finished_run(task, request)
    assert_contract_error(invoke(task, "eval", "--run-dir", tmp_path / "none"), str(tmp_path / "none"), "not found")
    assert_contract_error(
        invoke(task, "train", "--data", data, "--run-dir", tmp_path / "r", "--set", "no_such.key=1"),
        "unknown config key 'no_such'",
    )
    assert_contract_error(
        invoke(task, "train", "--data", data, "--run-dir", tmp_path / "r", "--set", "train.max_steps=x"),
        "train.max_steps",
        "expected an integer",
    )
    assert_contract_error(
        invoke(task, "train", "--data", data, "--run-dir", tmp_path / "r", "--config", tmp_path / "no.yaml"),
        str(tmp_path / "no.yaml"),
        "config file not found",
    )
    with pytest.raises(SkdError):  # --debug lets the exception (and its traceback) through
        invoke(task, "eval", "--run-dir", tmp_path / "none", "--debug")


@pytest.mark.parametrize("task", TASKS)
def test_a_finished_run_is_never_replaced_without_overwrite(task: str, request: pytest.FixtureRequest) -> None:
    run, data = finished_run(task, request)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert_contract_error(
        invoke(task, "train", "--data", data, "--run-dir", run), str(run), "finished run", "--overwrite"
    )
    assert_contract_error(invoke(task, "run", "--run-dir", run, "--data", data), str(run), "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("task", TASKS)
def test_resume_refuses_config_changes(task: str, request: pytest.FixtureRequest) -> None:
    run, _ = finished_run(task, request)
    assert_contract_error(invoke(task, "train", "--run-dir", run, "--resume", "--set", "train.lr=1"), "--resume")
    assert_contract_error(invoke(task, "train", "--run-dir", run, "--resume", "--baseline"), "--resume")
    assert_contract_error(invoke(task, "train", "--run-dir", run, "--resume"), "already finished", "--max-steps")


def test_help_builds_without_importing_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom skdcli.cli import app, RECIPE_APPS\n"
        "for args in [['--help']] + [[t, '--help'] for t in RECIPE_APPS] + [[t, 'train', '--help'] for t in RECIPE_APPS]:\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = [m for m in ('torch', 'numpy', 'transformers', 'datasets', 'mne') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"--help imported {proc.stdout.strip()}"


def test_the_process_entry_point_serves_a_task_like_the_full_app() -> None:
    # `main()` builds only the invoked task's commands; the result must be what the full app shows
    proc = subprocess.run(
        [sys.executable, "-m", "skdcli", "sleep", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "COLUMNS": "100", "TERM": "dumb"},
    )
    full = CliRunner().invoke(skd_app, ["sleep", "--help"], env={"COLUMNS": "100", "TERM": "dumb"}, prog_name="skd")
    assert proc.returncode == 0

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.replace("python -m skdcli", "skd").splitlines()]

    assert lines(proc.stdout) == lines(full.stdout)
