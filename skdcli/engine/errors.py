"""User-facing errors.

Anything a user can cause (bad file, bad config, missing run directory) raises ``SkdError``.
The CLI prints it as one line and exits non-zero; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class SkdError(Exception):
    """An error caused by input the user controls; shown as one line, no traceback."""

    def __init__(self, message: str, path: str | Path | None = None, exit_code: int = 2):
        self.path = None if path is None else str(path)
        self.message = message
        self.exit_code = exit_code
        super().__init__(self.format())

    def format(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message
