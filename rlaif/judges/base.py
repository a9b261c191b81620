"""The judge interface every backend implements.

A pointwise judge scores (prompt, response) against one principle. A score
it cannot produce is a ``Verdict`` with ``status='unscored'`` and the raw
output kept, never an exception and never a made-up label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rlaif.constitution import Principle
from rlaif.hashing import content_hash


@dataclass(frozen=True)
class Verdict:
    score: float | None
    status: str = "scored"  # "scored" | "unscored"
    raw: str = ""

    @classmethod
    def unscored(cls, reason: str) -> Verdict:
        return cls(None, "unscored", reason)


class Judge(Protocol):
    backend: str
    model: str
    template_hash: str

    def score(self, prompts: list[str], responses: list[str], principle: Principle) -> list[Verdict]:
        """One verdict per (prompt, response), in order."""

    def prepare(self, responses: list[str]) -> None:
        """A hint before a run of ``score`` calls: the responses they will read. A local encoder
        embeds them in one large, length-sorted call (the embedding judge); others do nothing."""


def close_judge(judge) -> None:
    """Release a judge's connections, if it holds any (remote backends)."""
    close = getattr(judge, "close", None)
    if close is not None:
        close()


def cache_key(judge: Judge, principle: Principle, prompt: str, response: str) -> str:
    """Content key of one judge call: a re-run with the same inputs is free."""
    return content_hash(
        [judge.backend, judge.model, judge.template_hash, principle.hash, prompt, response], length=32
    )
