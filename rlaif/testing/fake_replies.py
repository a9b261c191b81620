"""The fake OpenAI server's answers: replies, ready-made responders and injected faults.

Split from ``rlaif.testing.fake_openai`` (which re-exports every name here), so that the
server module holds only the HTTP server.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
    message: str | None = None

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, *, retry_after_ms: bool = True) -> Fault:
        """HTTP 429 + ``Retry-After: <seconds, may be fractional>`` (+ ``retry-after-ms``,
        which the openai client prefers) + an OpenAI-style error body.
        ``retry_after=None`` sends no retry headers."""
        return cls("rate_limit", status=429, retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def server_error(cls, status: int = 500, *, should_retry: bool | None = None, message: str | None = None) -> Fault:
        """An error status (500 by default; any 4xx/5xx works) with an OpenAI-style error body (its
        ``message``, e.g. vLLM's "System role not supported" 400, or a generic one).
        ``should_retry`` sends the ``x-should-retry`` header the openai client obeys."""
        return cls("server_error", status=status, should_retry=should_retry, message=message)

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


# --------------------------------------------------------------------------- response bodies

def _usage(request: dict, reply: Reply, text: str) -> tuple[dict, int]:
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else \
        _estimate_tokens(messages_text(request))
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else \
        max(1, math.ceil(len(text) / 4)) if text else 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}, completion_tokens

def _truncate(request: dict, reply: Reply, usage: dict) -> tuple[str, str]:
    """Cut the text and report finish_reason "length" when it exceeds max_(completion_)tokens."""
    text, finish = reply.text, reply.finish_reason or "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and usage["completion_tokens"] > limit:
        text, finish = text[: limit * 4], "length"
        usage["completion_tokens"] = limit
        usage["total_tokens"] = usage["prompt_tokens"] + limit
    return text, finish

def _ranked(reply: Reply, text: str, k: int) -> tuple[float, list[tuple[str, float]]]:
    top = reply.top_logprobs if reply.top_logprobs is not None else {text: 0.0}
    if text in top:
        lp = top[text]
    else:
        lp = (min(top.values()) - 1.0) if top else 0.0
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[: max(0, k)]
    return float(lp), ranked

def chat_payload(request: dict, reply: Reply, index: int, with_logprobs: bool, model: str) -> dict:
    """A chat.completion body answering ``request`` with ``reply``."""
    usage, _ = _usage(request, reply, reply.text)
    text, finish = _truncate(request, reply, usage)
    logprobs = None
    if with_logprobs and request.get("logprobs"):
        lp, ranked = _ranked(reply, text, int(request.get("top_logprobs") or 0))
        logprobs = {"content": [{
            "token": text, "logprob": lp, "bytes": list(text.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": float(v), "bytes": list(t.encode("utf-8"))}
                             for t, v in ranked],
        }], "refusal": None}
    n = request.get("n") or 1
    choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs, "finish_reason": finish} for i in range(int(n))]
    return {"id": f"chatcmpl-fake{index:08d}", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model") or model, "system_fingerprint": "fp_fake",
            "choices": choices, "usage": usage}

def legacy_payload(request: dict, reply: Reply, index: int, with_logprobs: bool, model: str) -> dict:
    """A text_completion body (the legacy /v1/completions endpoint) answering ``request`` with ``reply``."""
    usage, _ = _usage(request, reply, reply.text)
    text, finish = _truncate(request, reply, usage)
    logprobs = None
    k = request.get("logprobs")
    if with_logprobs and k is not None and k is not False:
        lp, ranked = _ranked(reply, text, int(k))
        logprobs = {"tokens": [text], "token_logprobs": [lp], "top_logprobs": [dict(ranked)], "text_offset": [0]}
    n = request.get("n") or 1
    choices = [{"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish} for i in range(int(n))]
    return {"id": f"cmpl-fake{index:08d}", "object": "text_completion", "created": int(time.time()),
            "model": request.get("model") or model, "choices": choices, "usage": usage}
