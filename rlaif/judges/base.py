"""The judge contract every backend implements (no heavy imports).

A judge scores (prompt, response) against one principle (pointwise) and, when
its ``capabilities`` say so, compares two responses (pairwise: P(first better)).
A score it cannot produce is a ``Verdict`` with ``status='unscored'`` and the
raw output kept, never an exception and never a made-up label.

Backends subclass ``JudgeBackend`` and declare what they can do in
``capabilities``; callers read that declaration, never probe for methods.
The registry (``rlaif.judges.BACKENDS``) repeats the capabilities so that a
config can be checked without building the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlaif.constitution import Principle
from rlaif.hashing import content_hash

if TYPE_CHECKING:
    from rlaif.judges.llm import PairVerdict


@dataclass(frozen=True)
class Verdict:
    score: float | None
    status: str = "scored"  # "scored" | "unscored"
    raw: str = ""

    @classmethod
    def unscored(cls, reason: str) -> Verdict:
        return cls(None, "unscored", reason)


@dataclass(frozen=True)
class ScoreRequest:
    """One pointwise scoring: ``response`` to ``prompt`` under ``principle``."""

    prompt: str
    response: str
    principle: Principle


# (prompt, first response, second response, principle): one pairwise comparison.
CompareRequest = tuple[str, str, str, Principle]


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares about itself.

    pairwise: it implements ``compare_batches`` (P(first better) per principle).
    chat: it answers free chat calls through ``run_calls`` (an LLM judge), through its
        call cache; used for rubric questions outside the constitution (policy eval).
    batch_items: score requests the judging core hands it per batch; ``None`` means the
        configured ``judge.batch_size``. A local encoder asks for large batches, which it
        embeds in one pass sorted by length, so that its batches carry little padding.
    score_range: the (low, high) its pointwise scores lie in (the LLM rubric: 1..9); the judge
        reward (rlaif/judges/reward.py) maps it to [-1, 1]. ``None``: scores used as they are.
    applies_checks: its pointwise scores already include the principles' deterministic checks
        (the embedded judge); otherwise the judge reward adds them.
    """

    pairwise: bool = False
    chat: bool = False
    batch_items: int | None = None
    score_range: tuple[float, float] | None = None
    applies_checks: bool = False


class JudgeBackend:
    """Base class of every judge. A subclass implements ``score`` (one principle at a time)
    or ``score_many`` (mixed principles); every other method has a working default.

    Identity (``backend``, ``model``, ``template_hash``) goes into cache keys and the stored
    details: change ``template_hash`` whenever the scoring rule changes.
    """

    backend: str = ""
    model: str = ""
    template_hash: str = ""
    capabilities: Capabilities = Capabilities()

    def score(self, prompts: list[str], responses: list[str], principle: Principle) -> list[Verdict]:
        """One verdict per (prompt, response) under one principle, in order."""
        return self.score_many([ScoreRequest(p, r, principle) for p, r in zip(prompts, responses)])

    def score_many(self, requests: list[ScoreRequest]) -> list[Verdict]:
        """One verdict per request, in order (the requests may mix principles)."""
        if type(self).score is JudgeBackend.score:
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_many")
        out: list[Verdict | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.principle.hash, []).append(i)
        for idx in groups.values():
            verdicts = self.score([requests[i].prompt for i in idx], [requests[i].response for i in idx],
                                  requests[idx[0]].principle)
            for i, v in zip(idx, verdicts):
                out[i] = v
        return out  # type: ignore[return-value]

    def score_batches(self, batches: Iterable[list[ScoreRequest]]) -> Iterator[list[Verdict]]:
        """``score_many`` over consecutive batches, yielding each batch's verdicts in order.
        Remote backends override it to keep the next batches in flight."""
        for batch in batches:
            yield self.score_many(batch)

    def compare_batches(self, batches: Iterable[list[CompareRequest]]) -> Iterator[list[PairVerdict]]:
        """P(first better) per comparison, batch by batch; only when ``capabilities.pairwise``."""
        raise NotImplementedError(f"judge backend {self.backend!r} does not compare pairs")

    def run_calls(self, calls: list) -> list:
        """Free chat calls ``[(Call, Principle)]`` -> Completions; only when ``capabilities.chat``."""
        raise NotImplementedError(f"judge backend {self.backend!r} answers no chat calls")

    def with_cache(self, store) -> JudgeBackend:
        """This judge behind the call cache kept in ``store`` (None: nothing kept, identical
        calls still made once). The default caches each score request (rlaif/judges/cache.py);
        a backend that makes finer calls (the LLM judge: chat calls) caches those instead."""
        from rlaif.judges.cache import CachingJudge

        return CachingJudge(self, store)

    def report(self) -> dict:
        """Counters for the stage report: calls, cache_hits, unscored, and the backend's own."""
        return {}

    def close(self) -> None:
        """Release connections; the judge may still be used afterwards (they reopen)."""


def close_judge(judge: JudgeBackend) -> None:
    """Release a judge's connections."""
    judge.close()


def cache_key(judge: JudgeBackend, principle: Principle, prompt: str, response: str) -> str:
    """Content key of one pointwise score: a re-run with the same inputs is free."""
    return content_hash(
        [judge.backend, judge.model, judge.template_hash, principle.hash, prompt, response], length=32
    )


Judge = JudgeBackend  # the name callers use
