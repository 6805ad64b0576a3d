"""Shared fixtures: one tiny spoken corpus and one tiny trained run per test session.

The corpus is real speech in the LibriSpeech layout, written by espeak-ng (installed by .ci/run),
and prepared through the real `librispeech` reader. Everything that can share it does, so the
suite stays within its time budget.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from skdcli.cli import app

REPO = Path(__file__).resolve().parent.parent


def sets(*items: str) -> list[str]:
    """`--set a=b --set c=d ...` as a CLI argument list."""
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args: str):
    """Run the CLI in-process; stdout and stderr are captured separately."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def invoke_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got: {result.stdout!r}"
    return json.loads(lines[0])


def assert_one_line_error(result, *needles: str, exit_code: int | None = None) -> None:
    """The error contract: a non-zero exit (``exit_code`` if given), one `error: ...` line on stderr naming
    what is wrong (each needle appears in it), no traceback, nothing on stdout."""
    assert result.exit_code != 0 if exit_code is None else result.exit_code == exit_code, (
        result.exit_code,
        result.stderr,
    )
    assert "Traceback" not in result.stderr and result.stdout == ""
    text = " ".join(result.stderr.split())  # rich may wrap a long line
    assert "error:" in text, result.stderr  # (after any progress output)
    error = text[text.index("error:") :]
    for needle in needles:
        assert needle in error, result.stderr


def run_cli_subprocess(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skdcli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


# `skd ARGS` with every training step of one Task class slowed down, so a kill lands mid-training.
_SLOW_CLI = """
import sys, time, importlib
module = importlib.import_module({module!r})
cls = getattr(module, {cls!r})
original = cls.compute_loss
def slow(self, *args):
    time.sleep({delay})
    return original(self, *args)
cls.compute_loss = slow
from skdcli.cli import main
sys.argv = ["skd", *sys.argv[1:]]
main()
"""


def kill_mid_training(
    task_class: str, args: list, wait_for: Path, delay: float = 0.05, settle: float = 0.12, timeout: float = 300
) -> None:
    """Run `skd ARGS` in a subprocess whose ``task_class`` ("module:Class") sleeps ``delay`` s per step, wait
    until ``wait_for`` (a checkpoint) exists, let ``settle`` s pass to land inside the following steps, then
    SIGKILL it (the kill -9 half of every exact-resume test)."""
    module, cls = task_class.split(":")
    script = _SLOW_CLI.format(module=module, cls=cls, delay=delay)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while not wait_for.exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# Each recipe keeps its session fixtures (and the golden trajectory of its shared tiny run) in
# tests/fixtures_<task>.py; they are loaded as plugins here, so a session fixture is built once per
# test session and every test module (and recipes/<task>/smoke.yaml) can name it. A new recipe's
# fixtures file is picked up by being there.
pytest_plugins = sorted(p.stem for p in Path(__file__).parent.glob("fixtures_*.py"))
