"""LLM judging, independent of the backend that serves the model.

A backend is a *completer*: it runs a list of chat calls (``Call``) and
returns one ``Completion`` each, never raising for transport errors (a call
that failed after its retries comes back with ``error`` set). ``LLMJudge``
builds the calls from the templates, reads verdicts, and owns the call-level
cache: the key covers backend, model, template hash, principle hash, the
messages (so the prompt and the *ordered* candidates) and the sampling
parameters. Finished calls are committed while the caller waits for a batch
(every ``COMMIT_EVERY_S``, from every batch in flight) and each batch's new
results before its verdicts are returned, so a kill loses at most the calls in
flight (``compare_batches`` keeps the next batches in flight so the server
never waits between batches).

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
from typing import Any, Protocol

from rlaif.constitution import Principle
from rlaif.hashing import content_hash
from rlaif.judges.base import Verdict
from rlaif.judges.errors import JudgeFatalError
from rlaif.judges.prompts import load_template, pairwise_messages, pointwise_messages, verdict_followup
from rlaif.judges.verdicts import CHOICES, DIGITS, parse_choice, parse_digit


@dataclass(frozen=True)
class Call:
    messages: list[dict]
    max_tokens: int = 1
    logprobs: bool = True
    options: tuple[str, ...] = ()  # offered verdict tokens (local backends read their logits directly)


@dataclass
class Completion:
    text: str | None = None
    top_logprobs: dict[str, float] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    def as_json(self) -> dict:
        return {"text": self.text, "top_logprobs": self.top_logprobs, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "error": self.error}


class BudgetExceeded(Exception):
    """A configured budget (max_calls, max_cost_usd) is reached; the stage stops, resumable."""


class Completer(Protocol):
    backend: str
    model: str

    def run(self, calls: list[Call]) -> list[Completion]:
        """One completion per call, in order. May raise BudgetExceeded after finishing the calls in flight."""

    # Optional: ``submit(calls, results) -> concurrent.futures.Future`` of ``run``'s result,
    # returning at once and filling ``results`` (index -> Completion) as calls finish (remote
    # backends), so that LLMJudge.compare_batches can keep the next batches in flight.
    # Optional: ``close()``, to release connections.

    def usage(self) -> dict[str, Any]:
        """Counters: retries, prompt_tokens, completion_tokens, cost_usd."""


@dataclass
class _Pending:
    """A batch of calls: cached results filled in, the rest in flight."""

    keys: list[str]
    out: list[Completion | None]
    todo: dict[str, list[int]] = field(default_factory=dict)  # key -> indices, for calls made by this batch
    borrowed: list[tuple[int, _Pending]] = field(default_factory=list)  # made by an earlier batch in flight
    future: concurrent.futures.Future | None = None
    by_key: dict[str, Completion] = field(default_factory=dict)
    partial: dict[int, Completion] = field(default_factory=dict)  # filled by the completer as calls finish
    committed: set[int] = field(default_factory=set)  # indices of `partial` already written to the cache
    context: Any = None  # what the caller needs to read the results back (compare: the plan)


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
    calls: int = 0
    cache_hits: int = 0
    unscored: int = 0
    consistent: int = 0
    consistency_checked: int = 0

    def as_dict(self, usage: dict) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "unscored": self.unscored, **usage,
                "position_consistency": (self.consistent / self.consistency_checked
                                         if self.consistency_checked else None)}


class LLMJudge:
    """Pairwise or pointwise judging through a completer, with a call cache."""

    caches_calls = True

    def __init__(self, completer: Completer, *, method: str = "pairwise", orders: str = "both", cot: bool = False,
                 cot_clamp: tuple[float, float] | None = None, cot_max_tokens: int = 256, top_logprobs: int = 5,
                 seed: int = 0, store=None):
        self.completer = completer
        self.backend, self.model = completer.backend, completer.model
        self.method, self.orders, self.cot, self.cot_clamp = method, orders, cot, cot_clamp
        self.cot_max_tokens, self.top_logprobs, self.seed = cot_max_tokens, top_logprobs, seed
        self.store = store
        self.stats = LLMStats()
        self._in_flight: dict[str, _Pending] = {}
        name = "pointwise" if method == "pointwise" else ("pairwise_cot" if cot else "pairwise")
        self.template = load_template(name)
        self.template_hash = content_hash([self.template.hash, method, orders, cot, cot_clamp, cot_max_tokens])

    # ------------------------------------------------------------ calls + cache
    def _key(self, call: Call, principle: Principle) -> str:
        return content_hash([self.backend, self.model, self.template.hash, principle.hash, call.messages,
                             call.max_tokens, call.logprobs, self.top_logprobs, 0.0], length=32)

    def run_calls(self, calls: list[tuple[Call, Principle]]) -> list[Completion]:
        return self._finish_calls(self._start_calls(calls))

    def _start_calls(self, calls: list[tuple[Call, Principle]]) -> _Pending:
        """Look up the cache and put the uncached calls in flight (without waiting for them)."""
        keys = [self._key(c, p) for c, p in calls]
        cached = self.store.cache_get_many(keys) if self.store is not None else {}
        job = _Pending(keys, [None] * len(calls))
        for i, k in enumerate(keys):
            if k in cached:
                job.out[i] = Completion(**cached[k])
                self.stats.cache_hits += 1
            elif k in self._in_flight:  # already asked by a batch still in flight: wait for that answer
                job.borrowed.append((i, self._in_flight[k]))
            else:
                job.todo.setdefault(k, []).append(i)  # identical calls in one batch are made once
        for k in job.todo:
            self._in_flight[k] = job
        if job.todo:
            first = [calls[idx[0]][0] for idx in job.todo.values()]
            submit = getattr(self.completer, "submit", None)
            if submit is not None:
                job.future = submit(first, job.partial)
            else:  # a synchronous completer (local model): run it now
                job.future = concurrent.futures.Future()
                try:
                    job.future.set_result(self.completer.run(first))
                except BaseException as e:  # noqa: BLE001 - handed to _finish_calls
                    job.future.set_exception(e)
        return job

    def _finish_calls(self, job: _Pending) -> list[Completion]:
        """Wait for a batch's calls, commit the new results, return one completion per call."""
        try:
            if job.future is not None:
                try:
                    results = self._wait(job.future)
                except (BudgetExceeded, JudgeFatalError) as e:  # keep the calls that finished
                    done = getattr(e, "completed", None) or {}
                    self.stats.calls += len(done)
                    keys = list(job.todo)
                    job.by_key.update({keys[j]: r for j, r in done.items()})
                    self._commit({keys[j]: r.as_json() for j, r in done.items() if r.error is None})
                    raise
                self.stats.calls += len(results)
                fresh = {}
                for (k, idx), r in zip(job.todo.items(), results):
                    job.by_key[k] = r
                    for i in idx:
                        job.out[i] = r
                    if r.error is None:  # failures are not cached: a re-run tries them again
                        fresh[k] = r.as_json()
                self._commit(fresh)
            for i, other in job.borrowed:
                job.out[i] = self._borrowed(other, job.keys[i])
        finally:
            for k in job.todo:
                if self._in_flight.get(k) is job:
                    del self._in_flight[k]
        return job.out  # type: ignore[return-value]

    @staticmethod
    def _borrowed(other: _Pending, key: str) -> Completion:
        """The answer to a call made by an earlier batch. Batches finish in order, so `other` is
        finished; only a batch stopped by a budget can lack the answer. (CoT rationale calls,
        run at once, never borrow: no call in flight has their key.)"""
        return other.by_key.get(key) or Completion(error="not made: the batch making this call was stopped")

    def _commit(self, fresh: dict[str, dict]) -> None:
        if self.store is not None and fresh:
            self.store.cache_put_many(fresh)

    # How often, while waiting for a batch, the calls that finished meanwhile (in any batch in flight)
    # are committed: a kill -9 then loses at most the calls in flight, not a whole batch of comparisons.
    COMMIT_EVERY_S = 0.05

    def _wait(self, future: concurrent.futures.Future):
        while True:
            try:
                return future.result(timeout=self.COMMIT_EVERY_S)
            except concurrent.futures.TimeoutError:
                self._commit_finished()

    def _commit_finished(self) -> None:
        """Commit the calls that have finished in every batch in flight (small transactions, the
        caller's thread: the completer fills ``partial`` from its own event loop)."""
        if self.store is None:
            return
        fresh = {}
        for job in {id(j): j for j in self._in_flight.values()}.values():
            keys = list(job.todo)
            for j, r in list(job.partial.items()):
                if j not in job.committed and r.error is None:
                    fresh[keys[j]] = r.as_json()
                    job.committed.add(j)
        self._commit(fresh)

    # ------------------------------------------------------------ pairwise
    def _order_flip(self, prompt: str, a: str, b: str, principle: Principle) -> bool:
        return int(content_hash([self.seed, prompt, sorted([a, b]), principle.id], 8), 16) % 2 == 1

    def compare(self, items: list[tuple[str, str, str, Principle]]) -> list[PairVerdict]:
        """P(a better than b) for each (prompt, a, b, principle)."""
        return self._finish_compare(self._start_compare(items))

    def compare_batches(self, batches: Iterable[list[tuple[str, str, str, Principle]]]) -> Iterator[list[PairVerdict]]:
        """``compare`` over consecutive batches, yielding each batch's verdicts in order.

        The next batches' calls are already in flight while a batch is read and committed,
        so the server is never left waiting for the caller between batches (a plain loop over
        ``compare`` drains to zero calls in flight at every batch boundary). Each batch is
        still committed before its verdicts are yielded: a kill loses at most the calls in
        flight (about twice the concurrency). On a budget stop the finished calls of the
        batches behind it are committed too before the stop propagates.
        """
        return self._pipelined(batches, self._start_compare, self._finish_compare)

    def score_batches(self, batches: Iterable[tuple[list[str], list[str], Principle]]) -> Iterator[list[Verdict]]:
        """``score`` over consecutive (prompts, responses, principle) batches, pipelined like
        ``compare_batches``."""
        return self._pipelined(batches, lambda b: self._start_score(*b), self._finish_score)

    MAX_BATCHES_AHEAD = 16

    def _pipelined(self, batches, start, finish):
        # Batches are started ahead until about twice the completer's concurrency worth of
        # calls is waiting (mostly-cached batches put few calls in flight each), but never
        # more than MAX_BATCHES_AHEAD batches; they are finished (committed) in order.
        target = 2 * getattr(self.completer, "concurrency", 1)
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
        except BaseException:  # Ctrl-C, or an error in the caller: keep the calls that did finish
            for job in pending:
                keys = list(job.todo)
                self._commit({keys[j]: r.as_json() for j, r in list(job.partial.items()) if r.error is None})
            raise

    def _start_compare(self, items: list[tuple[str, str, str, Principle]]) -> _Pending:
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

    def _finish_compare(self, job: _Pending) -> list[PairVerdict]:
        n_items, plan, rationales = job.context
        results = self._finish_calls(job)
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
    def score(self, prompts: list[str], responses: list[str], principle: Principle) -> list[Verdict]:
        return self._finish_score(self._start_score(prompts, responses, principle))

    def prepare(self, responses: list[str]) -> None:
        """Nothing to do ahead: every call reads its own prompt."""

    def _start_score(self, prompts: list[str], responses: list[str], principle: Principle) -> _Pending:
        calls = [(Call(pointwise_messages(self.template, principle.text, p, r), 1, True, DIGITS), principle)
                 for p, r in zip(prompts, responses)]
        return self._start_calls(calls)

    def _finish_score(self, job: _Pending) -> list[Verdict]:
        out = []
        for r in self._finish_calls(job):
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
        close = getattr(self.completer, "close", None)
        if close is not None:
            close()
