"""The tree passes `ruff check` with the pyproject's rules (pyflakes, pycodestyle, import order, bugbear) and is
`ruff format`ted at the configured line length, so an unused import, a loop variable captured late or an
unformatted file fails the suite, not a review."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check", "--output-format", "concise", "."], ["format", "--check", "."]])
def test_ruff(args: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:  # the test extra installs it; a bare `pip install -e .` does not
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
