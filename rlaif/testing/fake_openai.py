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
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable

from rlaif.testing.fake_http import MAX_HEADER_BYTES, BadRequest, Drop, Response, encode, read_request
from rlaif.testing.fake_replies import (  # noqa: F401  (re-exported: tests and bench import them from here)
    DEFAULT_TOP_LOGPROBS,
    Fault,
    Reply,
    Responder,
    _error_body,
    _estimate_tokens,
    _lp,
    chat_payload,
    default_responder,
    digits,
    echo_text,
    last_user_text,
    legacy_payload,
    messages_text,
    position_biased,
    prefers,
)

__all__ = [
    "FakeOpenAI", "Fault", "Reply",
    "default_responder", "position_biased", "prefers", "digits", "echo_text",
    "messages_text", "last_user_text",
]

HOST = "127.0.0.1"
DEFAULT_MODEL = "fake-judge"
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
                self._handle, host=HOST, port=self._requested_port, limit=MAX_HEADER_BYTES,
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
                    writer.write(encode(Response(431, _error_body(431, "headers too large")), False, "req_0"))
                    await writer.drain()
                    return
                self._http_count += 1
                request_id = f"req_fake_{self._http_count}"
                with self._lock:
                    self._stats["http_requests"] += 1
                try:
                    method, path, keep_alive, headers, body = await read_request(head, reader)
                except BadRequest as e:
                    await self._send(writer, Response(400, _error_body(400, str(e))), False, request_id)
                    return
                result = await self._dispatch(method, path, headers, body)
                if isinstance(result, Drop):
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

    async def _send(self, writer: asyncio.StreamWriter, resp: Response, keep_alive: bool, request_id: str) -> None:
        with self._lock:
            by = self._stats["by_status"]
            by[resp.status] = by.get(resp.status, 0) + 1
        writer.write(encode(resp, keep_alive, request_id))
        await writer.drain()
        if resp.trickle_s:
            for i in range(len(resp.body)):
                writer.write(resp.body[i:i + 1])
                await writer.drain()
                await asyncio.sleep(resp.trickle_s)

    async def _dispatch(self, method: str, path: str, headers: dict, body: bytes) -> Response | Drop:
        path = path.rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions" or path == "/completions":
            if method != "POST":
                return Response(405, _error_body(405, f"{method} not allowed on {path}"))
            return await self._completion(headers, body, chat=path == "/chat/completions")
        if path == "/models" and method == "GET":
            return Response(200, json.dumps({"object": "list", "data": [self._model_obj(self.model)]}).encode())
        if path.startswith("/models/") and method == "GET":
            return Response(200, json.dumps(self._model_obj(path[len("/models/"):])).encode())
        return Response(404, _error_body(404, f"Unknown route {method} {path} (fake server)"))

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

    async def _completion(self, headers: dict, raw: bytes, chat: bool) -> Response | Drop:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as e:
            return Response(400, _error_body(400, f"We could not parse the JSON body of your request: {e}"))
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
                return Response(400, _error_body(400, "stream=true is not supported by the fake server"))
            try:
                if fault is not None and fault.kind == "respond_with":
                    reply = fault.reply
                else:
                    reply = self.responder(body)
                    if inspect.isawaitable(reply):
                        reply = await reply
                if not isinstance(reply, Reply):
                    raise TypeError(f"responder returned {type(reply).__name__}, expected Reply")
                payload = (chat_payload if chat else legacy_payload)(
                    body, reply, index, not (fault is not None and fault.kind == "no_logprobs"), self.model)
            except Exception as e:  # noqa: BLE001
                return self._internal_error(e)
            if fault is not None and fault.kind == "empty_choices":
                payload["choices"] = []
            if fault is not None and fault.kind == "huge":
                payload["padding"] = "x" * max(0, fault.size - len(json.dumps(payload)) - 16)
                return Response(200, json.dumps(payload).encode(), chunked=fault.chunked)
            if fault is not None and fault.kind == "trickle":
                return Response(200, json.dumps(payload).encode(), trickle_s=fault.seconds)
            return Response(200, json.dumps(payload).encode())
        finally:
            with self._lock:
                self._stats["in_flight"] -= 1

    def _internal_error(self, e: Exception) -> Response:
        with self._lock:
            self.errors.append(e)
        msg = "fake server: " + "".join(traceback.format_exception_only(type(e), e)).strip()
        return Response(500, _error_body(500, msg), headers=(("x-should-retry", "false"),))

    @staticmethod
    def _fault_response(fault: Fault, headers: dict | None = None) -> Response | Drop | None:
        kind = fault.kind
        if kind == "echo_auth":
            auth = (headers or {}).get("authorization", "")
            return Response(fault.status, _error_body(fault.status, f"bad request; you sent Authorization: {auth}"),
                             headers=(("x-should-retry", "false"),))
        if kind == "rate_limit":
            hdrs: list[tuple[str, str]] = []
            if fault.retry_after is not None:
                hdrs.append(("retry-after", f"{fault.retry_after:g}"))
                if fault.retry_after_ms:
                    hdrs.append(("retry-after-ms", str(int(round(fault.retry_after * 1000)))))
            return Response(429, _error_body(429), headers=tuple(hdrs))
        if kind == "server_error":
            hdrs = []
            if fault.should_retry is not None:
                hdrs.append(("x-should-retry", "true" if fault.should_retry else "false"))
            return Response(fault.status, _error_body(fault.status, fault.message), headers=tuple(hdrs))
        if kind == "malformed":
            return Response(200, fault.body or b"", content_type=fault.content_type)
        if kind == "drop_connection":
            return Drop(fault.reset)
        return None  # timeout / no_logprobs / empty_choices / respond_with: a (modified) normal answer


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
