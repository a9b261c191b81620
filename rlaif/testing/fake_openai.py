"""A local, OpenAI-compatible fake server for testing and benchmarking the LLM judge client.

``FakeOpenAI`` serves ``POST /v1/chat/completions``, ``POST /v1/completions`` and
``GET /v1/models`` on **127.0.0.1 only**, from a background thread running its own
asyncio event loop, so the real ``openai.OpenAI`` / ``openai.AsyncOpenAI`` client can be
pointed at ``server.base_url``::

    with FakeOpenAI(latency_s=0.05, responder=prefers(lambda req: 0.9)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        server.script(Fault.rate_limit(retry_after=0.2), Fault.drop_connection())
        ...
        assert server.stats["by_status"][429] == 1

Why a hand-written HTTP/1.1 server on asyncio streams, and not a framework:

* Faults must be injected at the HTTP level, exactly as a flaky inference server
  produces them: a 429 with ``Retry-After`` (fractional seconds) and ``retry-after-ms``
  headers, a 5xx, a response that arrives only after the client's timeout, a 200 whose
  body is not JSON, and a connection closed (or reset) without any answer.  Frameworks
  (aiohttp, FastAPI/uvicorn, ``http.server``) sit between the handler and the socket:
  they always finish a response, add their own error pages, and make "close the socket
  mid-request" or "answer with a broken body under a JSON content type" awkward.
* It must add no dependency to the project: only the standard library is used.
* It must be fast: one asyncio task per connection, HTTP/1.1 keep-alive, no thread per
  request, and ``await asyncio.sleep(latency_s)`` per request, so concurrent requests
  overlap (64 concurrent clients at 50 ms latency get on the order of 1,000+ answers/s;
  the client library, not this server, is usually the bottleneck).

The HTTP subset: request line + headers, ``Content-Length`` bodies (what httpx sends),
chunked request bodies are decoded too, keep-alive unless ``Connection: close`` (or
HTTP/1.0 without ``keep-alive``); every response has a ``Content-Length``.  No TLS,
no streaming (``stream: true`` gets a 400), no pipelining guarantees beyond in-order
processing on a connection.

What the judge sees is decided by a *responder*: ``responder(request_body) -> Reply``.
Ready-made responders: ``default_responder`` (always "A", P(A)=0.7),
``position_biased(p_first)``, ``prefers(fn)``, ``digits(fn)``, ``echo_text(text)``.

Faults are queued with ``server.script(*faults)`` (applied to the next completion
requests, in arrival order) or decided per request by
``FakeOpenAI(fault_fn=lambda req_index, body: Fault | None)``; a scripted fault wins
over ``fault_fn``.  ``req_index`` counts completion requests from 0 (retries included).

Run standalone (e.g. for a benchmark in a separate process, which avoids sharing the
GIL with the client)::

    python -m rlaif.testing.fake_openai --port 8000 --latency 0.05
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import math
import socket
import struct
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = [
    "FakeOpenAI", "Fault", "Reply",
    "default_responder", "position_biased", "prefers", "digits", "echo_text",
    "messages_text", "last_user_text",
]

HOST = "127.0.0.1"
DEFAULT_MODEL = "fake-judge"
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024


# --------------------------------------------------------------------------- replies

@dataclass(frozen=True)
class Reply:
    """What the fake model answers.

    ``text`` is the assistant message (returned as ONE logprob "token", whatever its
    length).  ``top_logprobs`` maps candidate tokens to log-probabilities; it is
    returned (sorted, cut to the request's ``top_logprobs``) when the request asks for
    ``logprobs``.  ``None`` token counts are estimated (~4 characters per token).
    """

    text: str
    top_logprobs: dict[str, float] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


Responder = Callable[[dict], "Reply | Awaitable[Reply]"]


def _lp(p: float) -> float:
    """log(p); OpenAI's "very unlikely" sentinel -9999.0 for p == 0."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"probability out of [0, 1]: {p!r}")
    return math.log(p) if p > 0 else -9999.0


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def messages_text(request: dict) -> str:
    """All the text of a request: every message's content (chat) or the prompt (legacy)."""
    if "messages" in request:
        return "\n".join(_content_text(m.get("content")) for m in request.get("messages") or []
                         if isinstance(m, dict))
    prompt = request.get("prompt", "")
    return "\n".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)


def last_user_text(request: dict) -> str:
    """The content of the last ``user`` message ('' if none; the prompt for legacy requests)."""
    if "messages" not in request:
        return messages_text(request)
    for m in reversed(request.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _estimate_tokens(text: str) -> int:
    return len(text) // 4


DEFAULT_TOP_LOGPROBS = {"A": math.log(0.7), "B": math.log(0.3), " A": -5.0, "C": -6.0, "1": -7.0}


def default_responder(request: dict) -> Reply:
    """Always answers "A" with P(A)=0.7, P(B)=0.3 and a few unlikely distractors, whatever
    the last user message says (write a responder with ``last_user_text`` to depend on it)."""
    return Reply("A", dict(DEFAULT_TOP_LOGPROBS))


def prefers(fn: Callable[[dict], float]) -> Callable[[dict], Reply]:
    """Pairwise judge: ``fn(request) -> P(A is better)``; answers the argmax ("A" on a tie)
    with top logprobs ``{"A": log p, "B": log(1-p)}``.  ``fn`` gets the whole request body,
    so it can parse the two candidates out of ``request["messages"]`` (see ``messages_text``)."""

    def responder(request: dict) -> Reply:
        p = float(fn(request))
        return Reply("A" if p >= 0.5 else "B", {"A": _lp(p), "B": _lp(1.0 - p)})

    return responder


def position_biased(p_first: float = 0.8) -> Callable[[dict], Reply]:
    """Prefers whichever response is shown first ("A") with probability ``p_first``,
    regardless of content: a judge with pure position bias."""
    _lp(p_first)
    return prefers(lambda request: p_first)


def digits(fn: Callable[[dict], dict[str, float]]) -> Callable[[dict], Reply]:
    """Pointwise judge: ``fn(request) -> {"1": p, ..., "9": p}``; returns those as top
    logprobs (zero-probability digits left out) with the most likely digit as the text."""

    def responder(request: dict) -> Reply:
        dist = {str(k): float(v) for k, v in fn(request).items()}
        if not dist or any(not 0.0 <= v <= 1.0 for v in dist.values()):
            raise ValueError(f"digits(): need probabilities in [0, 1], got {dist!r}")
        best = max(dist, key=lambda k: dist[k])
        return Reply(best, {k: _lp(v) for k, v in dist.items() if v > 0})

    return responder


def echo_text(text: str | Callable[[dict], str]) -> Callable[[dict], Reply]:
    """Plain text answers (e.g. a chain-of-thought rationale); ``text`` may be a function
    of the request.  With ``logprobs`` requested, the whole text is one token of logprob 0."""

    def responder(request: dict) -> Reply:
        t = text(request) if callable(text) else text
        return Reply(str(t), None)

    return responder


# --------------------------------------------------------------------------- faults

@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; build with the class-method constructors."""

    kind: str
    status: int = 200
    retry_after: float | None = None
    seconds: float = 0.0
    body: bytes | None = None
    content_type: str = "application/json"
    should_retry: bool | None = None
    reset: bool = False
    retry_after_ms: bool = True
    reply: Reply | None = None
    size: int = 0
    chunked: bool = False

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, *, retry_after_ms: bool = True) -> Fault:
        """HTTP 429 + ``Retry-After: <seconds, may be fractional>`` (+ ``retry-after-ms``,
        which the openai client prefers) + an OpenAI-style error body.
        ``retry_after=None`` sends no retry headers."""
        return cls("rate_limit", status=429, retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def server_error(cls, status: int = 500, *, should_retry: bool | None = None) -> Fault:
        """An error status (500 by default; any 4xx/5xx works) with an OpenAI-style error body.
        ``should_retry`` sends the ``x-should-retry`` header the openai client obeys."""
        return cls("server_error", status=status, should_retry=should_retry)

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (on top of the latency) before answering normally; with a shorter
        client timeout the client gives up first."""
        return cls("timeout", seconds=float(seconds))

    @classmethod
    def malformed(cls, body: bytes = b'{"id": "chatcmpl-broken", "choices": [{"mess',
                  content_type: str = "application/json") -> Fault:
        """HTTP 200 whose body is not valid JSON (truncated JSON under a JSON content type)."""
        return cls("malformed", body=body, content_type=content_type)

    @classmethod
    def drop_connection(cls, reset: bool = False) -> Fault:
        """Close the connection without answering (``reset=True``: a TCP RST, not a FIN)."""
        return cls("drop_connection", reset=reset)

    @classmethod
    def no_logprobs(cls) -> Fault:
        """A valid 200 answer with ``logprobs: null`` even if asked for (like ``transformers serve``)."""
        return cls("no_logprobs")

    @classmethod
    def empty_choices(cls) -> Fault:
        """A valid 200 ChatCompletion with ``choices: []``."""
        return cls("empty_choices")

    @classmethod
    def trickle(cls, seconds_per_byte: float = 1.0) -> Fault:
        """Send the headers of a normal answer at once, then its body one byte every
        ``seconds_per_byte`` (a per-read client timeout never fires)."""
        return cls("trickle", seconds=float(seconds_per_byte))

    @classmethod
    def huge(cls, size: int = 20_000_000, *, chunked: bool = False) -> Fault:
        """HTTP 200 whose (valid JSON) body is ``size`` bytes; ``chunked=True`` sends it with
        ``transfer-encoding: chunked`` and no content-length."""
        return cls("huge", size=int(size), chunked=chunked)

    @classmethod
    def echo_auth(cls, status: int = 400) -> Fault:
        """An error status whose body echoes the request's Authorization header (a leaky proxy)."""
        return cls("echo_auth", status=status)

    @classmethod
    def respond_with(cls, reply: Reply) -> Fault:
        """Answer this one request with ``reply`` instead of calling the responder."""
        return cls("respond_with", reply=reply)


_ERROR_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"), 429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None) -> bytes:
    etype, code = _ERROR_TYPES.get(status, ("server_error", None))
    if message is None:
        message = ("Rate limit reached for requests (fake)." if status == 429 else
                   "The server had an error while processing your request (fake)." if status >= 500 else
                   f"Request failed with status {status} (fake).")
    return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}).encode()


# --------------------------------------------------------------------------- HTTP

@dataclass
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    trickle_s: float = 0.0  # seconds between body bytes (Fault.trickle)
    chunked: bool = False  # transfer-encoding: chunked instead of content-length (Fault.huge)


class _Drop:
    def __init__(self, reset: bool):
        self.reset = reset


class _BadRequest(Exception):
    pass


def _encode(resp: _Response, keep_alive: bool, request_id: str) -> bytes:
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    length = "transfer-encoding: chunked" if resp.chunked else f"content-length: {len(resp.body)}"
    lines = [f"HTTP/1.1 {resp.status} {reason}",
             f"content-type: {resp.content_type}",
             length,
             f"connection: {'keep-alive' if keep_alive else 'close'}",
             f"x-request-id: {request_id}"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if resp.trickle_s:
        return head
    if resp.chunked:
        step = 1 << 16
        parts = [b"%x\r\n%s\r\n" % (len(resp.body[i:i + step]), resp.body[i:i + step])
                 for i in range(0, len(resp.body), step)]
        return head + b"".join(parts) + b"0\r\n\r\n"
    return head + resp.body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(out)
        if len(out) + size > _MAX_BODY_BYTES:
            raise _BadRequest("body too large")
        out += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest("bad chunk terminator")


# --------------------------------------------------------------------------- server

class FakeOpenAI:
    """Run in a background thread with its own event loop; usable as a context manager.

    Args:
        latency_s: added per completion request (``asyncio.sleep``; concurrent requests overlap).
        responder: ``request_body -> Reply`` (may be async); ``default_responder`` if None.
        port: 0 picks a free port; the server listens on 127.0.0.1 only.
        fault_fn: ``(req_index, body) -> Fault | None``, consulted when no scripted fault is queued.
        model: the model id listed by ``GET /v1/models`` (and echoed when a request names none).

    Attributes (safe to read from the test thread):
        base_url: ``"http://127.0.0.1:PORT/v1"``.
        requests: every completion request body (parsed JSON), in arrival order.
        request_headers: the matching request headers (lower-case names), same order.
        stats: a snapshot dict: ``requests`` (completion requests), ``http_requests`` (all),
            ``by_status`` ({status: count}), ``faults`` ({kind: count}), ``dropped``,
            ``connections`` (accepted), ``open_connections``, ``in_flight``, ``max_in_flight``.
        errors: exceptions raised by the responder / fault_fn (each also answered with a 500).
    """

    def __init__(self, latency_s: float = 0.0, responder: Responder | None = None, port: int = 0, *,
                 fault_fn: Callable[[int, dict], Fault | None] | None = None, model: str = DEFAULT_MODEL):
        self.latency_s = float(latency_s)
        self.responder = responder or default_responder
        self.fault_fn = fault_fn
        self.model = model
        self.port = int(port)
        self.requests: list[dict] = []
        self.request_headers: list[dict[str, str]] = []
        self.errors: list[BaseException] = []
        self._requested_port = int(port)
        self._lock = threading.Lock()
        self._script: collections.deque[Fault] = collections.deque()
        self._stats = self._fresh_stats()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conn_tasks: set[asyncio.Task] = set()
        self._start_error: BaseException | None = None
        self._http_count = 0

    # ---- public API

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def stats(self) -> dict:
        with self._lock:
            s = dict(self._stats)
            s["by_status"] = dict(s["by_status"])
            s["faults"] = dict(s["faults"])
            return s

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next ``len(faults)`` completion requests, in order
        (``None`` entries mean "answer normally")."""
        for f in faults:
            if f is not None and not isinstance(f, Fault):
                raise TypeError(f"script() takes Fault objects, got {f!r}")
        with self._lock:
            self._script.extend(faults)

    def reset(self) -> None:
        """Forget recorded requests, stats, errors and queued faults (the server keeps running)."""
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()
            self.errors.clear()
            self._script.clear()
            open_conns, in_flight = self._stats["open_connections"], self._stats["in_flight"]
            self._stats = self._fresh_stats()
            self._stats["open_connections"], self._stats["in_flight"] = open_conns, in_flight

    def start(self) -> FakeOpenAI:
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI already started")
        ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="FakeOpenAI", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("FakeOpenAI did not start within 30 s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        """Stop listening, close every connection (cancelling requests in progress), end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
                loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # loop already closed
            pass
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeOpenAI(base_url={self.base_url!r}, latency_s={self.latency_s})"

    # ---- loop thread

    @staticmethod
    def _fresh_stats() -> dict:
        return {"requests": 0, "http_requests": 0, "by_status": {}, "faults": {}, "dropped": 0,
                "connections": 0, "open_connections": 0, "in_flight": 0, "max_in_flight": 0}

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._handle, host=HOST, port=self._requested_port, limit=_MAX_HEADER_BYTES,
                backlog=1024, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread
            self._start_error = e
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in self._conn_tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conn_tasks.add(task)
        with self._lock:
            self._stats["connections"] += 1
            self._stats["open_connections"] += 1
        reset = False
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # client closed the connection (normal end of keep-alive)
                except asyncio.LimitOverrunError:
                    writer.write(_encode(_Response(431, _error_body(431, "headers too large")), False, "req_0"))
                    await writer.drain()
                    return
                self._http_count += 1
                request_id = f"req_fake_{self._http_count}"
                with self._lock:
                    self._stats["http_requests"] += 1
                try:
                    method, path, keep_alive, headers, body = await self._read_request(head, reader)
                except _BadRequest as e:
                    await self._send(writer, _Response(400, _error_body(400, str(e))), False, request_id)
                    return
                result = await self._dispatch(method, path, headers, body)
                if isinstance(result, _Drop):
                    reset = result.reset
                    with self._lock:
                        self._stats["dropped"] += 1
                    return
                if reader.at_eof():  # the client gave up (e.g. its timeout) while we were waiting
                    return
                await self._send(writer, result, keep_alive, request_id)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # stop() cancels connection tasks; end quietly (Python 3.11's start_server callback
            # logs an error for a connection task that finishes cancelled).
            pass
        finally:
            self._conn_tasks.discard(task)
            with self._lock:
                self._stats["open_connections"] -= 1
            if reset:
                sock = writer.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except (OSError, AttributeError):
                    pass
                writer.transport.abort()
            else:
                writer.close()

    async def _send(self, writer: asyncio.StreamWriter, resp: _Response, keep_alive: bool, request_id: str) -> None:
        with self._lock:
            by = self._stats["by_status"]
            by[resp.status] = by.get(resp.status, 0) + 1
        writer.write(_encode(resp, keep_alive, request_id))
        await writer.drain()
        if resp.trickle_s:
            for i in range(len(resp.body)):
                writer.write(resp.body[i:i + 1])
                await writer.drain()
                await asyncio.sleep(resp.trickle_s)

    async def _read_request(self, head: bytes, reader: asyncio.StreamReader):
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"bad request line {lines[0]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                raise _BadRequest("bad content-length") from None
            if n < 0 or n > _MAX_BODY_BYTES:
                raise _BadRequest("bad content-length")
            body = await reader.readexactly(n) if n else b""
        else:
            body = b""
        return method.upper(), target.split("?", 1)[0], keep_alive, headers, body

    async def _dispatch(self, method: str, path: str, headers: dict, body: bytes) -> _Response | _Drop:
        path = path.rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions" or path == "/completions":
            if method != "POST":
                return _Response(405, _error_body(405, f"{method} not allowed on {path}"))
            return await self._completion(headers, body, chat=path == "/chat/completions")
        if path == "/models" and method == "GET":
            return _Response(200, json.dumps({"object": "list", "data": [self._model_obj(self.model)]}).encode())
        if path.startswith("/models/") and method == "GET":
            return _Response(200, json.dumps(self._model_obj(path[len("/models/"):])).encode())
        return _Response(404, _error_body(404, f"Unknown route {method} {path} (fake server)"))

    @staticmethod
    def _model_obj(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "fake-openai"}

    def _next_fault(self, index: int, body: dict) -> Fault | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.fault_fn is not None:
            return self.fault_fn(index, body)
        return None

    async def _completion(self, headers: dict, raw: bytes, chat: bool) -> _Response | _Drop:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return _Response(400, _error_body(400, f"We could not parse the JSON body of your request: {e}"))
        with self._lock:
            index = self._stats["requests"]
            self._stats["requests"] += 1
            self.requests.append(body)
            self.request_headers.append(headers)
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._stats["in_flight"])
        try:
            try:
                fault = self._next_fault(index, body)
            except Exception as e:  # noqa: BLE001 - a broken fault_fn must show up in the test
                return self._internal_error(e)
            if fault is not None:
                with self._lock:
                    self._stats["faults"][fault.kind] = self._stats["faults"].get(fault.kind, 0) + 1
            delay = self.latency_s + (fault.seconds if fault is not None and fault.kind == "timeout" else 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None:
                resp = self._fault_response(fault, headers)
                if resp is not None:
                    return resp
            if body.get("stream"):
                return _Response(400, _error_body(400, "stream=true is not supported by the fake server"))
            try:
                if fault is not None and fault.kind == "respond_with":
                    reply = fault.reply
                else:
                    reply = self.responder(body)
                    if inspect.isawaitable(reply):
                        reply = await reply
                if not isinstance(reply, Reply):
                    raise TypeError(f"responder returned {type(reply).__name__}, expected Reply")
                payload = (self._chat_payload if chat else self._legacy_payload)(
                    body, reply, index, with_logprobs=not (fault is not None and fault.kind == "no_logprobs"))
            except Exception as e:  # noqa: BLE001
                return self._internal_error(e)
            if fault is not None and fault.kind == "empty_choices":
                payload["choices"] = []
            if fault is not None and fault.kind == "huge":
                payload["padding"] = "x" * max(0, fault.size - len(json.dumps(payload)) - 16)
                return _Response(200, json.dumps(payload).encode(), chunked=fault.chunked)
            if fault is not None and fault.kind == "trickle":
                return _Response(200, json.dumps(payload).encode(), trickle_s=fault.seconds)
            return _Response(200, json.dumps(payload).encode())
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1

    def _internal_error(self, e: Exception) -> _Response:
        with self._lock:
            self.errors.append(e)
        msg = "fake server: " + "".join(traceback.format_exception_only(type(e), e)).strip()
        return _Response(500, _error_body(500, msg), headers=(("x-should-retry", "false"),))

    @staticmethod
    def _fault_response(fault: Fault, headers: dict | None = None) -> _Response | _Drop | None:
        kind = fault.kind
        if kind == "echo_auth":
            auth = (headers or {}).get("authorization", "")
            return _Response(fault.status, _error_body(fault.status, f"bad request; you sent Authorization: {auth}"),
                             headers=(("x-should-retry", "false"),))
        if kind == "rate_limit":
            hdrs: list[tuple[str, str]] = []
            if fault.retry_after is not None:
                hdrs.append(("retry-after", f"{fault.retry_after:g}"))
                if fault.retry_after_ms:
                    hdrs.append(("retry-after-ms", str(int(round(fault.retry_after * 1000)))))
            return _Response(429, _error_body(429), headers=tuple(hdrs))
        if kind == "server_error":
            hdrs = []
            if fault.should_retry is not None:
                hdrs.append(("x-should-retry", "true" if fault.should_retry else "false"))
            return _Response(fault.status, _error_body(fault.status), headers=tuple(hdrs))
        if kind == "malformed":
            return _Response(200, fault.body or b"", content_type=fault.content_type)
        if kind == "drop_connection":
            return _Drop(fault.reset)
        return None  # timeout / no_logprobs / empty_choices / respond_with: a (modified) normal answer

    # ---- response bodies

    def _usage(self, request: dict, reply: Reply, text: str) -> tuple[dict, int]:
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else \
            _estimate_tokens(messages_text(request))
        completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else \
            max(1, math.ceil(len(text) / 4)) if text else 0
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}, completion_tokens

    @staticmethod
    def _truncate(request: dict, reply: Reply, usage: dict) -> tuple[str, str]:
        """Cut the text and report finish_reason "length" when it exceeds max_(completion_)tokens."""
        text, finish = reply.text, reply.finish_reason or "stop"
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and usage["completion_tokens"] > limit:
            text, finish = text[: limit * 4], "length"
            usage["completion_tokens"] = limit
            usage["total_tokens"] = usage["prompt_tokens"] + limit
        return text, finish

    @staticmethod
    def _ranked(reply: Reply, text: str, k: int) -> tuple[float, list[tuple[str, float]]]:
        top = reply.top_logprobs if reply.top_logprobs is not None else {text: 0.0}
        if text in top:
            lp = top[text]
        else:
            lp = (min(top.values()) - 1.0) if top else 0.0
        ranked = sorted(top.items(), key=lambda kv: -kv[1])[: max(0, k)]
        return float(lp), ranked

    def _chat_payload(self, request: dict, reply: Reply, index: int, with_logprobs: bool) -> dict:
        usage, _ = self._usage(request, reply, reply.text)
        text, finish = self._truncate(request, reply, usage)
        logprobs = None
        if with_logprobs and request.get("logprobs"):
            lp, ranked = self._ranked(reply, text, int(request.get("top_logprobs") or 0))
            logprobs = {"content": [{
                "token": text, "logprob": lp, "bytes": list(text.encode("utf-8")),
                "top_logprobs": [{"token": t, "logprob": float(v), "bytes": list(t.encode("utf-8"))}
                                 for t, v in ranked],
            }], "refusal": None}
        n = request.get("n") or 1
        choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": logprobs, "finish_reason": finish} for i in range(int(n))]
        return {"id": f"chatcmpl-fake{index:08d}", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model") or self.model, "system_fingerprint": "fp_fake",
                "choices": choices, "usage": usage}

    def _legacy_payload(self, request: dict, reply: Reply, index: int, with_logprobs: bool) -> dict:
        usage, _ = self._usage(request, reply, reply.text)
        text, finish = self._truncate(request, reply, usage)
        logprobs = None
        k = request.get("logprobs")
        if with_logprobs and k is not None and k is not False:
            lp, ranked = self._ranked(reply, text, int(k))
            logprobs = {"tokens": [text], "token_logprobs": [lp], "top_logprobs": [dict(ranked)], "text_offset": [0]}
        n = request.get("n") or 1
        choices = [{"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish} for i in range(int(n))]
        return {"id": f"cmpl-fake{index:08d}", "object": "text_completion", "created": int(time.time()),
                "model": request.get("model") or self.model, "choices": choices, "usage": usage}


def main(argv: Iterable[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Run the fake OpenAI-compatible judge server on 127.0.0.1.")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added per completion request")
    ap.add_argument("--position-bias", type=float, default=None,
                    help="use position_biased(P) instead of the default responder")
    args = ap.parse_args(list(argv) if argv is not None else None)
    responder = position_biased(args.position_bias) if args.position_bias is not None else None
    with FakeOpenAI(latency_s=args.latency, responder=responder, port=args.port) as server:
        print(f"fake OpenAI server at {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
