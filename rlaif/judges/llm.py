"""LLM judging, independent of the backend that serves the model.

A backend is a *completer*: it runs a list of chat calls (``Call``) and
returns one ``Completion`` each, never raising for transport errors (a call
that failed after its retries comes back with ``error`` set). ``LLMJudge``
builds the calls from the templates, reads verdicts, and puts the calls behind
the call cache (rlaif/judges/cache.py): the key covers backend, model, template
hash, principle hash, the messages (so the prompt and the *ordered*
candidates) and the sampling parameters. Finished calls are committed as they
complete, so a kill loses at most the calls in flight; ``compare_batches`` and
``score_batches`` keep the next batches in flight so the server never waits
between batches.

Labelling methods (RLAIF / Constitutional AI):
- pairwise, both orders (default): P(A) from (A,B) and (B,A) averaged into a
  soft label; position consistency recorded; or one seeded random order;
- chain of thought: a rationale first (stored), then the single-token verdict
  conditioned on it; optional clamping of the probability (e.g. [0.4, 0.6]);
- pointwise rubric: a 1-9 score per principle per candidate (expected value
  under the digit probabilities).
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rlaif.constitution import Principle
from rlaif.hashing import content_hash
from rlaif.judges.base import Capabilities, CompareRequest, JudgeBackend, ScoreRequest, Verdict
from rlaif.judges.cache import CallCache, CallJob, run_now
from rlaif.judges.errors import BudgetExceeded
from rlaif.judges.prompts import load_template, pairwise_messages, pointwise_messages, verdict_followup
from rlaif.judges.verdicts import CHOICES, DIGITS, parse_choice, parse_digit


@dataclass(frozen=True)
class Call:
    messages: list[dict]
    max_tokens: int = 1
    logprobs: bool = True
    options: tuple[str, ...] = ()  # offered verdict tokens (local backends read their logits directly)
    # (temperature, top_p, seed) to sample with (critique writers); None: greedy, as every judge call is.
    sampling: tuple[float, float, int] | None = None


@dataclass
class Completion:
    text: str | None = None
    top_logprobs: dict[str, float] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # An error no retry fixes (a prompt over the model's context): final, like an unparseable verdict, so it is
    # not a failed call that makes the next run repeat the stage. Not cached either (only answers are).
    final: bool = False

    def as_json(self) -> dict:
        return {"text": self.text, "top_logprobs": self.top_logprobs, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "error": self.error}


class Completer:
    """Base class of the LLM backends: runs chat calls, one ``Completion`` per call, in order,
    never raising for a transport error (the call comes back with ``error`` set)."""

    backend: str = ""
    model: str = ""
    concurrency: int = 1  # calls it runs at once (the judge keeps about twice this many in flight)

    def run(self, calls: list[Call]) -> list[Completion]:
        """One completion per call, in order. May raise BudgetExceeded or JudgeFatalError, with
        the calls that did finish in ``completed``."""
        raise NotImplementedError

    def submit(self, calls: list[Call], results: dict[int, Completion]) -> concurrent.futures.Future:
        """Put the calls in flight and return at once, filling ``results`` (index -> Completion)
        as calls finish (a remote backend). This default runs them now (a local model)."""
        return run_now(self.run)(calls, results)

    def sent(self, messages: list[dict]) -> list[dict]:
        """``messages`` as this backend sends them (a served model's ``system_role``): what a call's cache key
        covers, so that a change of shape is a new call."""
        return messages

    def usage(self) -> dict[str, Any]:
        """Counters: retries, prompt_tokens, completion_tokens, cost_usd."""
        return {}

    def close(self) -> None:
        """Release connections (a later call reopens them)."""


@dataclass
class PairVerdict:
    """A principle's verdict on (a, b): P(a better), from one or two orders."""

    p_first: float | None
    status: str  # "scored" | "unscored"
    position_consistent: bool | None = None
    rationale: str | None = None
    raw: str | None = None
    orders: list[dict] = field(default_factory=list)


@dataclass
class LLMStats:
    cache: CallCache
    unscored: int = 0
    consistent: int = 0
    consistency_checked: int = 0

    @property
    def calls(self) -> int:
        return self.cache.calls

    @property
    def cache_hits(self) -> int:
        return self.cache.cache_hits

    def as_dict(self, usage: dict) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "unscored": self.unscored,
                **usage, "position_consistency": (self.consistent / self.consistency_checked
                                                  if self.consistency_checked else None)}


def _completion_json(r: Completion) -> dict | None:
    return r.as_json() if r.error is None else None  # failures are not cached


class LLMJudge(JudgeBackend):
    """Pairwise or pointwise judging through a completer, its chat calls behind the call cache."""

    capabilities = Capabilities(pairwise=True, chat=True, score_range=(1.0, 9.0))  # pointwise: 1..9 digits

    def __init__(self, completer: Completer, *, method: str = "pairwise", orders: str = "both", cot: bool = False,
                 cot_clamp: tuple[float, float] | None = None, cot_max_tokens: int = 256, top_logprobs: int = 5,
                 seed: int = 0, store=None):
        self.completer = completer
        self.backend, self.model = completer.backend, completer.model
        self.method, self.orders, self.cot, self.cot_clamp = method, orders, cot, cot_clamp
        self.cot_max_tokens, self.top_logprobs, self.seed = cot_max_tokens, top_logprobs, seed
        self.cache = CallCache(completer.submit, store, dump=_completion_json, load=lambda d: Completion(**d),
                               lost=lambda key: Completion(error="not made: the batch making this call was stopped"))
        self.stats = LLMStats(self.cache)
        name = "pointwise" if method == "pointwise" else ("pairwise_cot" if cot else "pairwise")
        self.template = load_template(name)
        self.template_hash = content_hash([self.template.hash, method, orders, cot, cot_clamp, cot_max_tokens])

    def with_cache(self, store) -> LLMJudge:
        """The chat calls are what is cached (finer than scores: both orders, rationales)."""
        self.cache.store = store
        return self

    # ------------------------------------------------------------ calls + cache
    def _key(self, call: Call, principle: Principle) -> str:
        return content_hash([self.backend, self.model, self.template.hash, principle.hash,
                             self.completer.sent(call.messages),
                             call.max_tokens, call.logprobs, self.top_logprobs, 0.0], length=32)

    def run_calls(self, calls: list[tuple[Call, Principle]]) -> list[Completion]:
        """Chat calls (each keyed under a principle) through the call cache, in order."""
        return self.cache.finish(self._start_calls(calls))

    def _start_calls(self, calls: list[tuple[Call, Principle]]) -> CallJob:
        return self.cache.start([c for c, _ in calls], [self._key(c, p) for c, p in calls])

    # ------------------------------------------------------------ pairwise
    def _order_flip(self, prompt: str, a: str, b: str, principle: Principle) -> bool:
        return int(content_hash([self.seed, prompt, sorted([a, b]), principle.id], 8), 16) % 2 == 1

    def compare(self, items: list[CompareRequest]) -> list[PairVerdict]:
        """P(a better than b) for each (prompt, a, b, principle)."""
        return self._finish_compare(self._start_compare(items))

    def compare_batches(self, batches: Iterable[list[CompareRequest]]) -> Iterator[list[PairVerdict]]:
        """``compare`` over consecutive batches, yielding each batch's verdicts in order.

        The next batches' calls are already in flight while a batch is read, so the server is
        never left waiting for the caller between batches (a plain loop over ``compare`` drains
        to zero calls in flight at every batch boundary). Finished calls are committed as they
        complete (rlaif/judges/cache.py): a kill loses at most the calls in flight. On a budget
        stop the finished calls of the batches behind it are committed too before the stop
        propagates.
        """
        return self._pipelined(batches, self._start_compare, self._finish_compare)

    def score_batches(self, batches: Iterable[list[ScoreRequest]]) -> Iterator[list[Verdict]]:
        """``score_many`` over consecutive batches, pipelined like ``compare_batches``."""
        return self._pipelined(batches, self._start_score, self._finish_score)

    MAX_BATCHES_AHEAD = 16

    def _pipelined(self, batches, start, finish):
        # Batches are started ahead until about twice the completer's concurrency worth of
        # calls is waiting (mostly-cached batches put few calls in flight each), but never
        # more than MAX_BATCHES_AHEAD batches; they are finished in order.
        target = 2 * self.completer.concurrency
        pending: collections.deque = collections.deque()

        def waiting() -> int:
            return sum(len(job.todo) for job in pending)

        def finish_oldest():
            try:
                out = finish(pending[0])  # left in `pending` until finished, for the handlers below
            except BudgetExceeded:
                pending.popleft()  # its finished calls are committed
                raise
            pending.popleft()
            return out

        try:
            for batch in batches:
                pending.append(start(batch))
                while len(pending) > 1 and (waiting() >= target or len(pending) > self.MAX_BATCHES_AHEAD):
                    yield finish_oldest()
            while pending:
                yield finish_oldest()
        except BudgetExceeded:  # from a batch being finished, or from a CoT rationale step
            while pending:  # keep what the batches behind it already paid for
                try:
                    finish(pending.popleft())
                except BudgetExceeded:
                    pass
            raise
        except BaseException:  # Ctrl-C, a fatal server error, an error in the caller: keep what finished
            self.cache.commit_finished()
            raise

    def _start_compare(self, items: list[CompareRequest]) -> CallJob:
        plan = []  # (item index, flipped, messages, principle)
        for n, (prompt, a, b, pr) in enumerate(items):
            if self.orders == "both":
                orders = [False, True]
            else:
                orders = [self._order_flip(prompt, a, b, pr)]
            for flipped in orders:
                first, second = (b, a) if flipped else (a, b)
                plan.append((n, flipped, pairwise_messages(self.template, pr.text, prompt, first, second), pr))
        rationales: list[str | None] = [None] * len(plan)
        if self.cot:  # the rationale step runs now; its verdict step is pipelined like any call
            firsts = self.run_calls([(Call(m, self.cot_max_tokens, False), pr) for _, _, m, pr in plan])
            rationales = [r.text if r.error is None else None for r in firsts]
            verdict_calls = [(Call(verdict_followup(self.template, m, rationales[i] or ""), 1, True, CHOICES), pr)
                             for i, (_, _, m, pr) in enumerate(plan)]
        else:
            verdict_calls = [(Call(m, 1, True, CHOICES), pr) for _, _, m, pr in plan]
        job = self._start_calls(verdict_calls)
        job.context = (len(items), plan, rationales)
        return job

    def _finish_compare(self, job: CallJob) -> list[PairVerdict]:
        n_items, plan, rationales = job.context
        results = self.cache.finish(job)
        per_item: list[list[dict]] = [[] for _ in range(n_items)]
        for (n, flipped, _, _), r, rat in zip(plan, results, rationales):
            p, how = (None, "error") if r.error else parse_choice(r.text, r.top_logprobs)
            if p is not None and self.cot and self.cot_clamp:
                p = min(max(p, self.cot_clamp[0]), self.cot_clamp[1])
            p_a = None if p is None else (1.0 - p if flipped else p)
            per_item[n].append({"flipped": flipped, "p_a": p_a, "read": how, "raw": r.error or r.text,
                                "rationale": rat})
        return [self._combine(o) for o in per_item]

    def _combine(self, orders: list[dict]) -> PairVerdict:
        ps = [o["p_a"] for o in orders if o["p_a"] is not None]
        rationale = "\n---\n".join(o["rationale"] for o in orders if o["rationale"]) or None
        if not ps:
            self.stats.unscored += 1
            return PairVerdict(None, "unscored", None, rationale, " | ".join(str(o["raw"]) for o in orders), orders)
        consistent = None
        if len(ps) == 2:
            consistent = (ps[0] > 0.5) == (ps[1] > 0.5) and ps[0] != 0.5 and ps[1] != 0.5
            self.stats.consistency_checked += 1
            self.stats.consistent += int(consistent)
        return PairVerdict(sum(ps) / len(ps), "scored", consistent, rationale, None, orders)

    # ------------------------------------------------------------ pointwise
    def score_many(self, requests: list[ScoreRequest]) -> list[Verdict]:
        return self._finish_score(self._start_score(requests))

    def _start_score(self, requests: list[ScoreRequest]) -> CallJob:
        calls = [(Call(pointwise_messages(self.template, r.principle.text, r.prompt, r.response), 1, True, DIGITS),
                  r.principle) for r in requests]
        return self._start_calls(calls)

    def _finish_score(self, job: CallJob) -> list[Verdict]:
        out = []
        for r in self.cache.finish(job):
            s, how = (None, "error") if r.error else parse_digit(r.text, r.top_logprobs)
            if s is None:
                self.stats.unscored += 1
                out.append(Verdict.unscored(f"{how}: {r.error or r.text!r}"))
            else:
                out.append(Verdict(s))
        return out

    def report(self) -> dict:
        return self.stats.as_dict(self.completer.usage())

    def close(self) -> None:
        """Release the backend's connections (the judge can still be used: a later call reopens them)."""
        self.completer.close()
