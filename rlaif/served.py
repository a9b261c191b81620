"""What an OpenAI-compatible server's refusals mean, for every client of a served model: the judge's ``openai``
backend, a served policy (``generate.backend: openai``) and the critique stage's writers.

Two HTTP 400s no retry can fix are read from the reply's text (servers give them no common error code):
- a chat template with no system role (Gemma's ``raise_exception('System role not supported')``, which vLLM,
  SGLang and ``transformers serve`` pass on): every call with a system message fails alike, fixed by the
  ``system_role: fold`` option (``rlaif.chat.served_messages``); nothing is re-sent in another shape unasked;
- a prompt over the served model's context length (vLLM's "maximum context length", OpenAI's
  ``context_length_exceeded``, SGLang's "longer than the model's context length", llama.cpp's
  ``exceed_context_size_error``): that prompt fails on every try, so it is a final outcome (a judge item
  ``unscored``, a prompt with no candidates), never cut.
"""

from __future__ import annotations

import re

# Statuses a server answers a request it will not take with (400; 413 and 422 from some proxies and TGI).
_REFUSAL_STATUS = (400, 413, 422)
_SYSTEM_REFUSED = re.compile(r"system[ _](role|message|prompt)s?\W+(is |are )?not (supported|allowed)"
                             r"|(does not|doesn't|cannot) (support|accept) (a |the )?system|no system role", re.I)
_OVER_CONTEXT = re.compile(r"context[ _]length|context (size|window)|maximum model length|max_model_len"
                           r"|maximum context|longer than the model|exceeds? the (available )?context", re.I)


def _refusal(e: BaseException) -> str | None:
    """The reply's text of an HTTP refusal (an ``openai.APIStatusError``), else None."""
    status = getattr(e, "status_code", None)
    return str(e) if status in _REFUSAL_STATUS else None


def refuses_system(e: BaseException, messages: list[dict]) -> bool:
    """The server refused ``messages`` because its chat template has no system role."""
    text = _refusal(e)
    return bool(text and messages and messages[0].get("role") == "system" and _SYSTEM_REFUSED.search(text))


def over_context(e: BaseException) -> bool:
    """The server refused a prompt over its context length."""
    text = _refusal(e)
    return bool(text and _OVER_CONTEXT.search(text))


def system_fix(field: str) -> str:
    """The fix named with a system-role refusal; ``field``: the option's dotted name."""
    return (f"the served model's chat template takes no system message: set {field}: fold (its text then starts "
            "the first user turn)")


def context_fix(what: str) -> str:
    """The fix named with a prompt over the context; ``what``: the text that was too long."""
    return (f"{what} is over the served model's context length: shorten it, or serve the model with a larger "
            "context (e.g. vLLM --max-model-len)")


def one_line(text: str, limit: int = 300) -> str:
    """A server's reply as one line of at most ``limit`` characters."""
    return " ".join(text.split())[:limit]
