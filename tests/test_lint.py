"""The tree passes `ruff check` with the pyproject's rules (pyflakes, pycodestyle, import order, bugbear), so an
unused import, a loop variable captured late or a shadowed exception fails the suite, not a review."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:  # the test extra installs it; a bare `pip install -e .` does not
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
