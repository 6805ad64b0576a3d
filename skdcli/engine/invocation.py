"""The command being run and its parsed options, set by the CLI (``cliutil.run_stage``), so a run's
provenance names what was asked for even when ``sys.argv`` is not ours (torchrun, test runners)."""

from __future__ import annotations

from typing import Any

INVOCATION: dict[str, Any] = {}
