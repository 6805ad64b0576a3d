"""Runs every recipe's declared smoke test (recipes/<task>/smoke.yaml) through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, invoke_json, sets

SMOKES = sorted((REPO / "recipes").glob("*/smoke.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("smoke_file", SMOKES, ids=[p.parent.name for p in SMOKES])
def test_recipe_smoke(smoke_file: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    spec = yaml.safe_load(smoke_file.read_text())
    run_dir = tmp_path / "run"
    data_args = ["--data", str(request.getfixturevalue(spec["data"]))] if spec.get("data") else []
    result = invoke_json(
        spec["task"], "run", "--run-dir", run_dir, *data_args, *spec.get("args", []), *sets(*spec.get("sets", []))
    )
    for name in spec["expect_files"]:
        assert (run_dir / name).is_file(), f"{smoke_file}: {name} missing"
    losses = [
        r["loss"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "train"
    ]
    ratio = spec["thresholds"]["last_train_loss_below_first_times"]
    first, last = sum(losses[:10]) / len(losses[:10]), sum(losses[-10:]) / len(losses[-10:])
    assert last < ratio * first, f"loss went {first:.3f} -> {last:.3f} (mean of first/last 10 logged)"
    for key, bound in spec["thresholds"].get("result", {}).items():
        assert result[key] < bound["below"], f"{key} = {result[key]} (must be below {bound['below']})"


def test_every_task_in_the_cli_declares_a_smoke_test() -> None:
    from skdcli.cli import app

    tasks = {group.name for group in app.registered_groups}
    declared = {yaml.safe_load(p.read_text())["task"] for p in SMOKES}
    assert tasks <= declared, f"tasks without recipes/<task>/smoke.yaml: {tasks - declared}"


def test_the_engine_never_imports_a_recipe() -> None:
    recipes = {p.parent.name for p in (REPO / "skdcli").glob("*/cli.py")} - {"engine"}
    for source in (REPO / "skdcli" / "engine").glob("*.py"):
        text = source.read_text()
        for recipe in recipes:
            assert f"skdcli.{recipe}" not in text and f"..{recipe}" not in text, f"{source.name} imports {recipe}"
