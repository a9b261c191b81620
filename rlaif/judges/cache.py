"""The judge-call cache: one wrapper around any backend's calls (as lm-evaluation-harness's CachingLM).

A backend runs *calls*: an LLM judge, chat calls through its completer; a scoring
judge such as the embedded encoder, pointwise score requests. ``CallCache`` sits
in front of them: each call is looked up by its content key (the caller's; it
covers backend, model, template, principle and the call's own content, so a
re-run makes no calls and editing one principle re-judges only that principle);
identical calls in a batch are made once; a call already in flight for an
earlier batch is borrowed, not repeated.

Each finished call's result is committed as it completes: while the caller
waits for a batch, the results that came in (the remote completer fills them
in as calls finish, from its own thread) are written every ``COMMIT_EVERY_S``
in one small transaction, never held back for a whole batch of comparisons.
A ``kill -9`` therefore loses at most the calls in flight and those of the
last interval. Failed calls are not cached (a re-run tries them again). On a
budget stop or a fatal server error the calls that did finish are committed
before the stop propagates, and so are they on Ctrl-C or any other error while
a batch is awaited.

``JudgeBackend.with_cache`` puts a judge behind this cache: ``CachingJudge``
for a judge whose calls are its pointwise scores; the LLM judge applies it to
its completer (rlaif/judges/llm.py).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlaif.judges.base import JudgeBackend, ScoreRequest, Verdict, cache_key
from rlaif.judges.errors import BudgetExceeded, JudgeFatalError

# While a batch is awaited, the calls that finished meanwhile (in every batch in flight) are
# committed at least this often.
COMMIT_EVERY_S = 0.01


@dataclass
class CallJob:
    """A batch of calls: cached results filled in, the rest in flight."""

    keys: list[str]
    out: list[Any]
    todo: dict[str, list[int]] = field(default_factory=dict)  # key -> indices, for calls made by this batch
    borrowed: list[tuple[int, CallJob]] = field(default_factory=list)  # made by an earlier batch in flight
    future: concurrent.futures.Future | None = None
    by_key: dict[str, Any] = field(default_factory=dict)
    partial: dict[int, Any] = field(default_factory=dict)  # filled by the backend as calls finish
    seen: int = 0  # entries of `partial` already committed (it fills in completion order)
    context: Any = None  # what the caller needs to read the results back


Submit = Callable[[list, dict], concurrent.futures.Future]


class CallCache:
    """Cache, dedup and commit-as-completed in front of ``submit(calls, results) -> Future[list]``.

    ``submit`` puts the calls in flight and fills ``results`` (index -> result) as each one
    finishes; a synchronous backend runs them at once and returns a finished future
    (``run_now``). ``dump(result)`` is the JSON stored for a result, or None for a result not
    to cache (an error); ``load(json)`` reads it back; ``lost(key)`` is the result of a
    borrowed call whose batch was stopped before making it.
    """

    def __init__(self, submit: Submit, store=None, *, dump: Callable[[Any], dict | None],
                 load: Callable[[dict], Any], lost: Callable[[str], Any]):
        self.submit, self.store, self.dump, self.load, self.lost = submit, store, dump, load, lost
        self.calls = 0  # calls made (cache misses; identical calls counted once)
        self.cache_hits = 0
        self._in_flight: dict[str, CallJob] = {}
        self._jobs: list[CallJob] = []  # started, not finished: their finished calls get committed

    def run(self, calls: list, keys: list[str]) -> list:
        return self.finish(self.start(calls, keys))

    def start(self, calls: list, keys: list[str]) -> CallJob:
        """Look up the cache and put the uncached calls in flight (without waiting for them)."""
        cached = self.store.cache_get_many(keys) if self.store is not None else {}
        job = CallJob(keys, [None] * len(calls))
        for i, k in enumerate(keys):
            if k in cached:
                job.out[i] = self.load(cached[k])
                self.cache_hits += 1
            elif k in self._in_flight:  # asked by a batch still in flight: wait for that answer
                job.borrowed.append((i, self._in_flight[k]))
            else:
                job.todo.setdefault(k, []).append(i)  # identical calls in one batch are made once
        for k in job.todo:
            self._in_flight[k] = job
        if job.todo:
            self._jobs.append(job)
            try:
                job.future = self.submit([calls[idx[0]] for idx in job.todo.values()], job.partial)
            except BaseException as e:  # noqa: BLE001 - a synchronous backend's error, raised by finish
                job.future = concurrent.futures.Future()
                job.future.set_exception(e)
        return job

    def finish(self, job: CallJob) -> list:
        """Wait for a batch's calls (committing finished calls meanwhile); one result per call."""
        try:
            if job.future is not None:
                try:
                    results = self._wait(job.future)
                except (BudgetExceeded, JudgeFatalError) as e:  # keep the calls that did finish
                    keys = list(job.todo)
                    self.calls += len(e.completed)
                    job.by_key.update({keys[j]: r for j, r in e.completed.items()})
                    job.partial.update(e.completed)
                    self.commit_finished()
                    raise
                except BaseException:  # Ctrl-C or any error while waiting: keep what finished meanwhile
                    self.commit_finished()
                    raise
                self.calls += len(results)
                for j, ((k, idx), r) in enumerate(zip(job.todo.items(), results)):
                    job.by_key[k] = r
                    job.partial.setdefault(j, r)
                    for i in idx:
                        job.out[i] = r
                self.commit_finished()
            for i, other in job.borrowed:
                job.out[i] = self._borrowed(other, job.keys[i])
        finally:
            for k in job.todo:
                if self._in_flight.get(k) is job:
                    del self._in_flight[k]
            if job in self._jobs:
                self._jobs.remove(job)
        return job.out

    def _wait(self, future: concurrent.futures.Future) -> list:
        while True:
            try:
                return future.result(timeout=COMMIT_EVERY_S)
            except concurrent.futures.TimeoutError:
                self.commit_finished()

    def _borrowed(self, other: CallJob, key: str):
        """The answer to a call made by an earlier batch. Batches finish in order, so ``other`` is
        finished; only a batch stopped by a budget can lack the answer."""
        r = other.by_key.get(key)
        return r if r is not None else self.lost(key)

    def commit_finished(self) -> None:
        """Commit every finished, not yet committed result of the batches in flight, in one small
        transaction (in the caller's thread; the backend fills ``partial`` from its own)."""
        fresh: dict[str, dict] = {}
        seen: list[tuple[CallJob, int]] = []
        for job in self._jobs:
            done = list(job.partial.items())  # copied at once: the backend's thread may add to it
            if len(done) == job.seen:
                continue
            keys = list(job.todo)
            for j, r in done[job.seen:]:
                d = self.dump(r)
                if d is not None:  # failures are not cached: a re-run tries them again
                    fresh[keys[j]] = d
            seen.append((job, len(done)))
        if self.store is not None and fresh:
            self.store.cache_put_many(fresh)
        for job, n in seen:  # marked committed only once written: an interrupted write is redone
            job.seen = n


def run_now(fn: Callable[[list], list]) -> Submit:
    """``submit`` for a synchronous backend: run the calls now, return a finished future."""

    def submit(calls: list, results: dict) -> concurrent.futures.Future:
        f: concurrent.futures.Future = concurrent.futures.Future()
        out = fn(calls)
        results.update(enumerate(out))
        f.set_result(out)
        return f

    return submit


def _verdict_json(v: Verdict) -> dict:
    return {"score": v.score, "status": v.status, "raw": v.raw}


class CachingJudge(JudgeBackend):
    """A judge whose calls are its pointwise scores, behind the call cache (``store`` may be None:
    nothing kept, identical requests in a batch still scored once). Comparisons, if the inner
    judge makes any, are passed through uncached."""

    def __init__(self, inner: JudgeBackend, store=None):
        self.inner = inner
        self.backend, self.model, self.template_hash = inner.backend, inner.model, inner.template_hash
        self.capabilities = inner.capabilities
        self.cache = CallCache(run_now(inner.score_many), store, dump=_verdict_json, load=lambda d: Verdict(**d),
                               lost=lambda key: Verdict.unscored("not scored: the batch was stopped"))

    def score_many(self, requests: list[ScoreRequest]) -> list[Verdict]:
        keys = [cache_key(self.inner, r.principle, r.prompt, r.response) for r in requests]
        return self.cache.run(requests, keys)

    def compare_batches(self, batches):
        return self.inner.compare_batches(batches)

    def run_calls(self, calls: list) -> list:
        return self.inner.run_calls(calls)

    def with_cache(self, store) -> JudgeBackend:
        self.cache.store = store
        return self

    def report(self) -> dict:
        return self.inner.report() | {"calls": self.cache.calls, "cache_hits": self.cache.cache_hits}

    def close(self) -> None:
        self.inner.close()
