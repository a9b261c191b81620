"""The one user-facing error type.

The CLI prints ``RlaifError`` as a single line (no traceback) and exits with
``exit_code`` (2 = bad input). Library code raises it for anything the user
can fix: a bad file, a bad field, a missing path.
"""

from __future__ import annotations


class RlaifError(Exception):
    """An error the user can fix; printed as one line by the CLI."""

    def __init__(self, message: str, exit_code: int = 2, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        # Extra lines (e.g. one per lint problem) printed after the message.
        self.problems = problems or []

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message
