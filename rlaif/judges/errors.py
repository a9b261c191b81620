"""Judge backend errors that must stop a stage, and the scrubbing of secrets from backend text."""

from __future__ import annotations

import re

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


class JudgeFatalError(RlaifError):
    """The judge server refused every call for a reason a retry cannot fix (HTTP 401, 403, 404):
    the stage stops at once, after the finished calls are committed."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=FATAL_EXIT)
