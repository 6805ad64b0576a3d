"""Golden loss trajectories, the way torchtune pins its recipes: each registered recipe's shared test run
(a few CPU steps at a fixed seed: the ``<task>_run`` session fixture of tests/fixtures_<task>.py) must log
exactly the loss values pinned there (``GOLDEN_TRAJECTORY``), term by term.

A change of convention that still trains (another KL reduction, a temperature applied twice, a term
dropped or added) moves these numbers and fails here. A change that moves them on purpose updates them
in the same commit, saying why. To print the current values of every recipe:

    SKD_GOLDEN_PRINT=1 python -m pytest tests/test_golden_trajectories.py -s -q
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from skdcli.cli import RECIPE_APPS

TASKS = sorted(RECIPE_APPS)

# Compared keys: the total loss, every logged term (loss/...) and every weight (weight/...).
TOLERANCE = 1e-4


def golden_of(task: str) -> dict[int, dict[str, float]]:
    """The recipe's pinned values: ``GOLDEN_TRAJECTORY`` in tests/fixtures_<task>.py."""
    return importlib.import_module(f"fixtures_{task.replace('-', '_')}").GOLDEN_TRAJECTORY


def run_fixture(task: str) -> str:
    """The session fixture holding the recipe's finished tiny run: ``<task>_run`` in tests/fixtures_<task>.py."""
    return f"{task.replace('-', '_')}_run"


def logged_values(run_dir: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        row["step"]: {k: v for k, v in row.items() if k == "loss" or k.startswith(("loss/", "weight/"))}
        for row in rows
        if row["split"] == "train"
    }


@pytest.mark.parametrize("recipe", TASKS)
def test_golden_loss_trajectory(recipe: str, request: pytest.FixtureRequest) -> None:
    logged = logged_values(request.getfixturevalue(run_fixture(recipe)))
    if os.environ.get("SKD_GOLDEN_PRINT"):
        print(f"\n{recipe}: {json.dumps({s: logged[s] for s in sorted(logged)[:6]})}")
    expected = golden_of(recipe)
    assert expected, f"{recipe}: GOLDEN_TRAJECTORY is empty"
    for step, values in expected.items():
        assert step in logged, f"{recipe}: step {step} was not logged"
        assert set(logged[step]) == set(values), f"{recipe} step {step}: logged terms {sorted(logged[step])}"
        for key, value in values.items():
            assert logged[step][key] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), (
                f"{recipe} step {step} {key}: {logged[step][key]!r} != pinned {value!r}"
            )
