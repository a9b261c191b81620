"""The judging core: one batch loop over any backend, pointwise or pairwise.

Used by the judge stage (rlaif/judges/run.py), ``rlaif eval-judge``, the report's
and the policy evaluation's judge figures, and (later) online-RL rewards:

- ``score_items``: every applicable principle's score for each response;
- ``compare_items``: P(first better) under the chosen principles for each comparison;
- ``Item.total`` / ``Comparison.p_first``: the one weighted aggregation (ranking.aggregate);
- ``prefer`` / ``vote``: a score difference or a probability read as an A/B/tie vote.

The work goes to the backend in batches of ``batch_size`` requests (or as many as its
``capabilities.batch_items`` asks for: the embedded encoder embeds one large batch sorted
by length), as one stream, so that a remote backend keeps the next batches in flight.
Caching, deduplication and commits are the backend's call cache (rlaif/judges/cache.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.constitution import Constitution, Principle
from rlaif.hashing import content_hash
from rlaif.judges.base import JudgeBackend, ScoreRequest, Verdict
from rlaif.judges.ranking import aggregate

if TYPE_CHECKING:
    from rlaif.judges.llm import PairVerdict


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    unscored: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "unscored": self.unscored}


@dataclass
class Item:
    """One response to score pointwise; ``verdicts`` (principle id -> Verdict) is filled in."""

    prompt: str
    category: str | None
    response: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def score(self, pid: str) -> float | None:
        v = self.verdicts.get(pid)
        return v.score if v is not None and v.status == "scored" else None

    def total(self, constitution: Constitution) -> float | None:
        return aggregate({pid: self.score(pid) for pid in self.verdicts}, constitution, self.category)


@dataclass
class Comparison:
    """Two responses to compare under ``principles``; ``verdicts`` (id -> PairVerdict) is filled in."""

    prompt: str
    category: str | None
    a: str
    b: str
    principles: list[Principle]
    verdicts: dict[str, PairVerdict] = field(default_factory=dict)

    def p_first(self, constitution: Constitution) -> float | None:
        """P(a better), the weighted mean over the principles that gave a verdict."""
        return aggregate({pid: v.p_first for pid, v in self.verdicts.items()}, constitution, self.category)


def sample_principle(principles: list[Principle], seed: int, key: str) -> Principle:
    """One principle, drawn with probability proportional to weight, seeded by ``key``."""
    total = sum(p.weight for p in principles)
    u = int(content_hash([seed, "principle", key], 8), 16) / 0xFFFFFFFF * total
    for p in principles:
        u -= p.weight
        if u <= 0:
            return p
    return principles[-1]


def comparison_principles(constitution: Constitution, category: str | None, mode: str, seed: int,
                          key: str) -> list[Principle]:
    """The principles that judge one comparison: every applicable one (``all``), or one sampled
    by weight per comparison (``sample``, as in Constitutional AI)."""
    ps = [p for p in constitution.principles if p.applies(category)]
    if mode == "sample" and ps:
        return [sample_principle(ps, seed, key)]
    return ps


def vote(p_first: float | None) -> str | None:
    """P(A better) as a vote: "A", "B", "tie" (exactly 0.5) or None (no verdict)."""
    return None if p_first is None else ("tie" if p_first == 0.5 else ("A" if p_first > 0.5 else "B"))


def prefer(a: float | None, b: float | None) -> str | None:
    """Two scores (or totals) as a vote: "A", "B", "tie" or None when either is missing."""
    return None if a is None or b is None else ("tie" if a == b else ("A" if a > b else "B"))


def _quiet(label: str, total: int):
    return contextlib.nullcontext(lambda n=1, info=None, total=None: None)


def _run_batches(judge: JudgeBackend, work: list, size: int, request: Callable[[Any], Any],
                 stream: Callable[[Iterable[list]], Iterator[list]], put: Callable[[Any, Any], None],
                 label: str | None) -> JudgeStats:
    """The one batch loop: ``work`` in batches of ``size``, each unit made a request, the
    batches streamed through the backend, each result ``put`` back on its unit. ``label``
    None: no progress bar (a caller inside another bar, e.g. the judge reward in training)."""
    from rlaif.progress import task as bar

    task = bar if label is not None else _quiet

    chunks = [work[s:s + size] for s in range(0, len(work), size)]
    before = judge.report()
    stats = JudgeStats()

    def count() -> None:
        now = judge.report()
        stats.calls = now.get("calls", 0) - before.get("calls", 0)
        stats.cache_hits = now.get("cache_hits", 0) - before.get("cache_hits", 0)

    results = stream([request(w) for w in chunk] for chunk in chunks)
    with task(label, len(work)) as advance:
        for chunk, out in zip(chunks, results):
            for w, r in zip(chunk, out):
                put(w, r)
                stats.unscored += r.status != "scored"
            count()
            advance(len(chunk), info=f"{stats.calls} calls, {stats.cache_hits} cached")
    count()
    return stats


def score_items(judge: JudgeBackend, constitution: Constitution, items: list[Item], batch_size: int = 64,
                progress: str | None = None, show_progress: bool = True) -> JudgeStats:
    """Fill ``item.verdicts`` for every principle that applies to the item's category."""
    work = [(p, it) for it in items for p in constitution.principles if p.applies(it.category)]

    def put(w, v: Verdict) -> None:
        w[1].verdicts[w[0].id] = v

    return _run_batches(judge, work, judge.capabilities.batch_items or batch_size,
                        lambda w: ScoreRequest(w[1].prompt, w[1].response, w[0]), judge.score_batches, put,
                        (progress or "judge") if show_progress else None)


def compare_items(judge: JudgeBackend, comparisons: list[Comparison], batch_size: int = 64,
                  progress: str | None = None, show_progress: bool = True) -> JudgeStats:
    """Fill ``comparison.verdicts`` for each of its principles (a pairwise backend)."""
    work = [(c, p) for c in comparisons for p in c.principles]

    def put(w, v: PairVerdict) -> None:
        w[0].verdicts[w[1].id] = v

    return _run_batches(judge, work, batch_size, lambda w: (w[0].prompt, w[0].a, w[0].b, w[1]),
                        judge.compare_batches, put, (progress or "judge (pairwise)") if show_progress else None)
