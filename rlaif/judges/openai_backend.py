"""`openai` backend: any OpenAI-compatible server through the official async client.

OpenAI, vLLM, SGLang, Ollama, llama.cpp server, `transformers serve`. The API
key is read from the environment variable named by ``judge.api_key_env`` and
is never written anywhere.

Retries are the client's own (exponential backoff with jitter on 429, 5xx,
timeouts and connection errors, honouring Retry-After); attempts are counted
through an httpx request hook so the report can say how many were retries.
Written here because the client has none of them: client-side rate limits
(``rpm``/``tpm`` token buckets), a concurrency cap, and call/cost budgets.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import math
import os
import threading
import time
import weakref
from typing import Any

from rlaif import chat, safeio, served
from rlaif.errors import RlaifError
from rlaif.hashing import content_hash
from rlaif.judges.errors import BudgetExceeded, JudgeFatalError, scrub
from rlaif.judges.llm import Call, Completer, Completion

# HTTP statuses no retry can fix: a wrong key, no access, an unknown model. The stage stops.
_FATAL_STATUS = {401: "authentication failed (check the key in judge.api_key_env)",
                 403: "access denied (check the key's permissions)",
                 404: "not found (check judge.model and judge.base_url)"}

# Attempts (the first try and its retries) of the call running in this task; the request hook
# counts into it, so an error can say how many retries it really took.
_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("rlaif_attempts", default=None)


class _TooLarge(Exception):
    pass


def _dropped_connection(e: BaseException) -> BaseException | None:
    """The aiohttp connection error behind a timeout error, if that is what it really was:
    the aiohttp transport maps every ClientConnectionError (a dropped or reset connection
    too) to a connect timeout."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if type(e).__module__.startswith("aiohttp") and "Timeout" not in name:
            return e
        e = e.__cause__ or e.__context__
    return None


# Completers with a running loop: closed at exit if their owner did not (a library user who
# never calls close() would otherwise see aiohttp's "Unclosed client session" warnings).
_OPEN: weakref.WeakSet[OpenAICompleter] = weakref.WeakSet()


@atexit.register
def _close_open_completers() -> None:
    for c in list(_OPEN):
        try:
            c.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class _Bucket:
    """A token bucket refilled continuously at ``per_minute``; bursts up to one second's worth."""

    def __init__(self, per_minute: float):
        self.capacity = max(1.0, per_minute / 60.0)
        self.level = self.capacity
        self.rate = per_minute / 60.0
        self.stamp = time.monotonic()

    async def take(self, n: float) -> None:
        n = min(n, self.capacity)  # a single larger request waits for a full bucket
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.level >= n:
                self.level -= n
                return
            await asyncio.sleep((n - self.level) / self.rate)


class OpenAICompleter(Completer):
    backend = "openai"

    def __init__(self, cfg, section: str = "judge"):
        try:
            import openai  # noqa: F401
        except ImportError:  # pragma: no cover - a declared dependency
            raise RlaifError("judge.backend 'openai' needs the openai package (pip install openai)") from None
        self.cfg = cfg
        self.section = section  # where its options live, for the fixes errors name (generate.served: a writer)
        self.model = cfg.model
        self.concurrency = cfg.concurrency
        if not cfg.base_url and not cfg.api_key_env:
            raise RlaifError("judge.base_url: required for the openai backend (e.g. http://127.0.0.1:8000/v1), "
                             "or set judge.api_key_env for api.openai.com")
        self._key = "not-needed"
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise RlaifError(f"judge.api_key_env: environment variable {cfg.api_key_env} is not set")
            self._key = key
        self.calls = self.attempts = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.failed = 0
        self._fatal: JudgeFatalError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def sent(self, messages: list[dict]) -> list[dict]:
        return chat.served_messages(messages, self.cfg.system_role)

    # ------------------------------------------------------------ accounting
    def cost_usd(self) -> float:
        c = self.cfg
        return (self.prompt_tokens * c.price_prompt_per_mtok + self.completion_tokens * c.price_completion_per_mtok) / 1e6

    def usage(self) -> dict[str, Any]:
        return {"retries": max(0, self.attempts - self.calls), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd(), 6),
                "failed_calls": self.failed}

    def _check_budget(self) -> None:
        c = self.cfg
        if c.max_calls is not None and self.calls >= c.max_calls:
            raise BudgetExceeded(f"judge.max_calls={c.max_calls} reached")
        if c.max_cost_usd is not None and self.cost_usd() >= c.max_cost_usd:
            raise BudgetExceeded(f"judge.max_cost_usd={c.max_cost_usd} reached (spent ${self.cost_usd():.4f})")

    # ------------------------------------------------------------ running
    def run(self, calls: list[Call]) -> list[Completion]:
        return self.submit(calls).result()

    def submit(self, calls: list[Call], results: dict[int, Completion] | None = None) -> concurrent.futures.Future:
        """Put calls in flight on the completer's own event loop and return at once (one client,
        warm connections, the concurrency cap and rate-limit buckets shared by every batch).
        ``results``, if given, is filled (index -> Completion) as each call finishes, so that
        an interrupted caller can keep what was already paid for."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="rlaif-openai", daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._setup(), self._loop).result()
            _OPEN.add(self)
        return asyncio.run_coroutine_threadsafe(self._run(calls, results), self._loop)

    def close(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    async def _setup(self) -> None:
        import openai

        async def on_request(request):  # one per attempt, retries included
            self.attempts += 1
            mine = _ATTEMPTS.get()
            if mine is not None:
                mine[0] += 1

        # aiohttp as the transport (the openai client's own option) costs about 30% less client
        # CPU per call than httpx and keeps up at high concurrency (bench/judge_throughput.py).
        kind = openai.DefaultAioHttpClient if self.cfg.http_client == "aiohttp" else openai.DefaultAsyncHttpxClient
        http = kind(event_hooks={"request": [on_request]})
        self._client = openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._key,
                                          max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s,
                                          http_client=http)
        self._sem = asyncio.Semaphore(self.cfg.concurrency)
        self._rpm = _Bucket(self.cfg.rpm) if self.cfg.rpm else None
        self._tpm = _Bucket(self.cfg.tpm) if self.cfg.tpm else None

    async def _shutdown(self) -> None:
        """Cancel the calls still in flight (after Ctrl-C), then close the connections."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.close()

    async def _run(self, calls: list[Call], results: dict[int, Completion] | None = None) -> list[Completion]:
        results = {} if results is None else results
        budget: list[BudgetExceeded] = []

        async def one(i: int, call: Call) -> None:
            async with self._sem:
                if budget or self._fatal:  # after a 401/403/404 no batch sends another call
                    return
                try:
                    self._check_budget()
                except BudgetExceeded as e:
                    budget.append(e)
                    return
                self.calls += 1
                if self._rpm:
                    await self._rpm.take(1)
                if self._tpm:
                    await self._tpm.take(sum(len(m["content"]) for m in call.messages) / 4 + call.max_tokens)
                try:
                    results[i] = await self._complete(self._client, call)
                except JudgeFatalError as e:
                    self._fatal = self._fatal or e

        await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))
        if self._fatal:  # the call cache commits the finished calls (`completed`) and the stage stops
            raise JudgeFatalError(self._fatal.message, completed=results)
        if budget:
            raise BudgetExceeded(str(budget[0]), completed=results)
        return [results[i] for i in range(len(calls))]

    async def _complete(self, client, call: Call) -> Completion:
        import openai

        messages = self.sent(call.messages)
        kw: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": call.max_tokens,
                              "temperature": 0.0}
        if call.sampling is not None:  # a seed per call (from its content), for servers that honour one
            temperature, top_p, seed = call.sampling
            kw.update(temperature=temperature, top_p=top_p, seed=int(content_hash([seed, call.messages], 8), 16) >> 1)
        if call.logprobs:
            kw.update(logprobs=True, top_logprobs=self.cfg.top_logprobs)
        attempts = [0]
        _ATTEMPTS.set(attempts)  # this task's own counter (each call runs in its own task)

        def retries() -> int:
            return max(0, attempts[0] - 1)

        def failed(msg: str) -> Completion:
            self.failed += 1
            return Completion(error=scrub(msg, self._key))

        # One deadline for the whole call (every attempt, the headers and the body, and the
        # client's waits between attempts): the client's timeout is per read, so a server
        # trickling a byte a second would never be cut off.
        deadline = self._deadline()
        try:
            raw = await asyncio.wait_for(self._post(client, kw), timeout=deadline)
            resp = safeio.loads_reply(raw)
        except TimeoutError:
            return failed(f"timeout: no complete answer within {deadline:g}s (judge.timeout_s per attempt "
                          f"and the waits between attempts) after {retries()} retries")
        except _TooLarge:
            return failed(f"response too large: over judge.max_response_bytes={self.cfg.max_response_bytes}")
        except openai.APIStatusError as e:
            if e.status_code in _FATAL_STATUS:
                raise JudgeFatalError(scrub(
                    f"judge server {self.cfg.base_url or 'api.openai.com'}: HTTP {e.status_code} "
                    f"{_FATAL_STATUS[e.status_code]}: {str(e)[:200]}", self._key).replace("\n", " ")) from None
            reply = f"HTTP {e.status_code} after {retries()} retries: {served.one_line(str(e))}"
            if served.over_context(e):  # final for this call (unscored, never cut), not a failure a re-run retries
                return Completion(error=scrub(f"{reply}; {served.context_fix('the prompt')}", self._key), final=True)
            if served.refuses_system(e, messages):
                return failed(f"{reply}; {served.system_fix(f'{self.section}.system_role')}")
            return failed(reply)
        except openai.APITimeoutError as e:
            dropped = _dropped_connection(e)
            if dropped is not None:
                return failed(f"connection error after {retries()} retries: {type(dropped).__name__}: {dropped}")
            return failed(f"timeout after {retries()} retries ({self.cfg.timeout_s}s)")
        except openai.APIConnectionError as e:
            return failed(f"connection error after {retries()} retries: {e}")
        except (openai.APIError, ValueError) as e:  # malformed bodies (JSONDecodeError is a ValueError)
            return failed(f"malformed response: {type(e).__name__}: {str(e)[:200]}")
        try:
            return self._read(resp, call)
        except (TypeError, KeyError, IndexError, AttributeError, ValueError) as e:
            return failed(f"malformed response: {type(e).__name__}: {str(e)[:200]} ({str(resp)[:200]})")

    def _deadline(self) -> float:
        """timeout_s per attempt plus, per retry, the longest wait the client makes before one
        (a Retry-After it honours, up to its MAX_RETRY_AFTER_DELAY)."""
        try:
            from openai._constants import MAX_RETRY_AFTER_DELAY as wait
        except ImportError:  # pragma: no cover - older clients honour at most 60 s
            wait = 60.0
        n = self.cfg.max_retries
        return self.cfg.timeout_s * (n + 1) + n * float(wait)

    async def _post(self, client, kw: dict) -> bytes:
        """POST the call and read at most ``judge.max_response_bytes`` of the body.

        The client's generic `post` (its documented way to reach any endpoint) with the raw
        body, rather than the typed `chat.completions.create`: the same retries, backoff,
        Retry-After, auth and headers, without the per-call TypedDict transform of the
        request and model construction of the response, which were ~40% of the client's CPU
        per call (bench/judge_throughput.py). The body is streamed (the client's own
        raw-response mode) so that a huge one is refused, not held whole."""
        from openai._constants import RAW_RESPONSE_HEADER

        limit = self.cfg.max_response_bytes
        resp = await client.post("/chat/completions", body=kw, cast_to=bytes,
                                 options={"headers": {RAW_RESPONSE_HEADER: "stream"}})
        http = resp.http_response
        try:
            size = http.headers.get("content-length")
            if size is not None and size.isdigit() and int(size) > limit:
                raise _TooLarge
            chunks, n = [], 0
            async for chunk in http.aiter_bytes():
                n += len(chunk)
                if n > limit:
                    raise _TooLarge
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await http.aclose()

    def _read(self, resp: Any, call: Call) -> Completion:
        """A chat completion body (plain JSON) -> Completion; raises on a body of the wrong shape."""
        if not isinstance(resp, dict) or not resp.get("choices"):
            raise ValueError("no choices")
        usage = resp.get("usage") or {}
        pt = int(usage.get("prompt_tokens") or 0)
        ct = int(usage.get("completion_tokens") or 0)
        self.prompt_tokens += pt
        self.completion_tokens += ct
        choice = resp["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"message content is {type(text).__name__}, not text")
        if text:
            text = scrub(text, self._key)  # kept as the raw output of an unparseable verdict
        top = None
        content = (choice.get("logprobs") or {}).get("content")
        if call.logprobs and content:
            first = content[0]
            top = {t["token"]: t.get("logprob") for t in (first.get("top_logprobs") or [])}
            top.setdefault(first["token"], first.get("logprob"))
            top = {k: float(v) for k, v in top.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)} or None
        return Completion(text=text, top_logprobs=top, prompt_tokens=pt, completion_tokens=ct)
