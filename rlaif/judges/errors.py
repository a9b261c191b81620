"""Judge backend errors that stop a stage, and the scrubbing of secrets from backend text."""

from __future__ import annotations

import re
from typing import Any

from rlaif.errors import RlaifError

# Exit code of a stage stopped by a fatal backend error (wrong key, no access, unknown model):
# 3, distinct from 2 (bad input file/field), because the config is valid and the server said no.
FATAL_EXIT = 3

_SECRETS = [
    (re.compile(r"(?i)\bBearer\s+[^\s\"',;]+"), "Bearer ***"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
    (re.compile(r"(?i)(\"?(?:authorization|api[_-]?key|x-api-key)\"?\s*[:=]\s*\"?)[^\s\"',;]+"), r"\1***"),
]


def scrub(text: str, key: str | None = None) -> str:
    """``text`` with the API key, any bearer token and any sk-... key replaced by ``***``.
    Every backend error or raw text that is stored or printed goes through here."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class BudgetExceeded(Exception):
    """A configured budget (max_calls, max_cost_usd) is reached; the stage stops, resumable.

    ``completed``: the calls of the stopped batch that did finish (index in the batch -> result);
    the call cache commits them before the stop propagates."""

    def __init__(self, message: str, completed: dict[int, Any] | None = None):
        super().__init__(message)
        self.completed: dict[int, Any] = dict(completed or {})


class JudgeFatalError(RlaifError):
    """The judge server refused every call for a reason a retry cannot fix (HTTP 401, 403, 404):
    the stage stops at once, after the finished calls are committed (``completed``, as for
    ``BudgetExceeded``)."""

    def __init__(self, message: str, completed: dict[int, Any] | None = None):
        super().__init__(message, exit_code=FATAL_EXIT)
        self.completed: dict[int, Any] = dict(completed or {})
