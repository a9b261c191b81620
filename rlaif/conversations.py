"""Reading the data formats people have into conversations (stored form: ``rlaif.chat.encode``).

Accepted records (one JSON object a line; the readers in ``rlaif.records`` call these):

- prompts: ``{"text"|"prompt": str}``; ``{"prompt": [messages]}`` (TRL conversational);
  ``{"messages": [messages]}`` (a trailing assistant turn is dropped: it is not part of the prompt).
- SFT: ``{"prompt", "response"}``; TRL prompt-completion ``{"prompt", "completion"}`` (standard or
  conversational); TRL language modeling ``{"messages": [...]}`` or ``{"text": HH dialogue}`` (the last assistant
  turn is the response).
- preferences: TRL explicit prompt ``{"prompt", "chosen", "rejected"}`` and implicit prompt ``{"chosen",
  "rejected"}`` (the shared beginning of the two conversations is the prompt), standard or conversational; the
  A/B format ``{"prompt", "response_a", "response_b", "label": "A"|"B"|"tie"}``.
- single-response feedback (``feedback_of``): thumbs in TRL's unpaired (KTO) format ``{"prompt", "completion",
  "label": true|false}``; ratings ``{"prompt", "completion", "rating": 1..N, "scale": N}``; rankings
  ``{"prompt", "completions": [...], "ranking": [rank of each completion, 1 = best]}``.

Any prompt string in HH-RLHF style (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) is read as a multi-turn
conversation. Every problem is one ``FILE:LINE: ...`` RlaifError.
"""

from __future__ import annotations

import re
from typing import Any

from rlaif import chat
from rlaif.errors import RlaifError
from rlaif.vocab import RANK, RATING, THUMBS

MAX_SCALE = 100  # the largest rating scale accepted
MAX_RANKED = 64  # the most completions one ranking may order

# Linear-time split on the HH-RLHF turn markers (no nested quantifiers).
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def is_hh(text: str) -> bool:
    return text.lstrip().startswith("Human:") and "\n\nAssistant:" in text


def hh_messages(text: str) -> list[dict[str, str]]:
    """HH-RLHF dialogue text -> messages (an empty trailing ``Assistant:`` is dropped)."""
    parts = _HH_TURN.split(text.strip())
    msgs = [{"role": _HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts) - 1, 2)]
    if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    return msgs


def _where(path, n) -> str:
    return f"{path}:{n}"


def _conv(path, n, value: Any, key: str) -> list[dict[str, str]]:
    """A field that is a string (plain or HH dialogue) or a list of messages -> messages."""
    if isinstance(value, str):
        if not value.strip():
            raise RlaifError(f"{_where(path, n)}: field {key!r} is empty")
        if is_hh(value):  # its turns are checked as a message list's are (the limit on their number)
            return chat.check_messages(hh_messages(value), f"{_where(path, n)}: field {key!r}")
        return [{"role": "user", "content": value.strip()}]
    if isinstance(value, list):
        msgs = chat.check_messages(value, f"{_where(path, n)}: field {key!r}")
        for i, m in enumerate(msgs):
            if not m["content"].strip():  # as an empty string field is
                raise RlaifError(f"{_where(path, n)}: field {key!r}: message {i} ({m['role']}) is empty; give it "
                                 "text or remove it")
        return msgs
    raise RlaifError(f"{_where(path, n)}: field {key!r} must be a string or a list of "
                     f"{{\"role\", \"content\"}} messages, got {type(value).__name__}")


def _response(path, n, value: Any, key: str) -> str:
    """A completion: a string, or a conversation whose messages are all the assistant's (TRL's form)."""
    if isinstance(value, str):
        if not value.strip():
            raise RlaifError(f"{_where(path, n)}: field {key!r} is empty")
        return value  # kept exactly (a label's text is its identity)
    msgs = _conv(path, n, value, key)
    if any(m["role"] != "assistant" for m in msgs):
        raise RlaifError(f"{_where(path, n)}: field {key!r}: a completion holds only assistant messages; "
                         "put earlier turns in 'prompt' (or drop 'prompt' for the implicit-prompt format)")
    text = msgs[0]["content"] if len(msgs) == 1 else "\n\n".join(m["content"].strip() for m in msgs)
    if not text.strip():
        raise RlaifError(f"{_where(path, n)}: field {key!r} is empty")
    return text


def _split_last(path, n, msgs: list[dict[str, str]], key: str) -> tuple[list[dict[str, str]], str]:
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
        raise RlaifError(f"{_where(path, n)}: field {key!r} must end with a non-empty assistant turn after "
                         "at least one user turn")
    return msgs[:-1], msgs[-1]["content"]


def _prompt(path, n, msgs: list[dict[str, str]]) -> str:
    if not any(m["role"] == "user" for m in msgs):
        raise RlaifError(f"{_where(path, n)}: the prompt has no user message")
    if not any(m["role"] == "user" and m["content"].strip() for m in msgs):  # e.g. HH text "Human: \n\nAssistant:"
        raise RlaifError(f"{_where(path, n)}: the prompt has no user message with text; give the user's turn text")
    return chat.encode(msgs)


def prompt_of(path, n, obj: dict) -> str:
    """The stored prompt of a prompts-file record."""
    if "messages" in obj:
        msgs = _conv(path, n, obj["messages"], "messages")
        if msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        return _prompt(path, n, msgs)
    key = "text" if "text" in obj else "prompt"
    if key not in obj:
        raise RlaifError(f"{_where(path, n)}: prompt record needs 'text', 'prompt' or 'messages'")
    msgs = _conv(path, n, obj[key], key)
    if len(msgs) > 1 and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    return _prompt(path, n, msgs)


def sft_of(path, n, obj: dict) -> dict[str, str]:
    """``{"prompt": stored prompt, "response": str}`` of an SFT record."""
    if "prompt" in obj:
        key = "response" if "response" in obj else "completion"
        if key not in obj:
            raise RlaifError(f"{_where(path, n)}: SFT record with 'prompt' needs 'response' or 'completion'")
        return {"prompt": _prompt(path, n, _conv(path, n, obj["prompt"], "prompt")),
                "response": _response(path, n, obj[key], key).strip()}
    for key in ("messages", "text"):
        if key in obj:
            value = obj[key]
            if isinstance(value, str) and not is_hh(value):
                raise RlaifError(f"{_where(path, n)}: 'text' must be an HH-style dialogue "
                                 "(\"Human: ...\\n\\nAssistant: ...\"); or give 'prompt' and 'response'")
            prompt, response = _split_last(path, n, _conv(path, n, value, key), key)
            return {"prompt": _prompt(path, n, prompt), "response": response}
    raise RlaifError(f"{_where(path, n)}: unknown SFT format; use {{prompt, response}}, {{prompt, completion}}, "
                     "{messages} or {text: HH dialogue}")


def preference_of(path, n, obj: dict) -> tuple[str, str, str, str]:
    """(stored prompt, first, second, label) of a preference record; label: "chosen" (first wins) | "tie"."""
    # a bad prompt is named first, whatever the format
    msgs = _conv(path, n, obj["prompt"], "prompt") if "prompt" in obj else None
    if "chosen" in obj or "rejected" in obj:
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise RlaifError(f"{_where(path, n)}: preference record needs both 'chosen' and 'rejected'")
        if msgs is not None:
            prompt = _prompt(path, n, msgs)
            return prompt, _response(path, n, obj["chosen"], "chosen"), \
                _response(path, n, obj["rejected"], "rejected"), "chosen"
        # implicit prompt: the two conversations share everything but their last assistant turn
        pc, c = _split_last(path, n, _conv(path, n, obj["chosen"], "chosen"), "chosen")
        pr, r = _split_last(path, n, _conv(path, n, obj["rejected"], "rejected"), "rejected")
        if pc != pr:
            raise RlaifError(f"{_where(path, n)}: implicit-prompt record: 'chosen' and 'rejected' must share every "
                             "turn but the last; give an explicit 'prompt' instead")
        return _prompt(path, n, pc), c, r, "chosen"
    if "response_a" in obj or "response_b" in obj:
        if msgs is None:
            raise RlaifError(f"{_where(path, n)}: A/B record needs 'prompt'")
        prompt = _prompt(path, n, msgs)
        a = _response(path, n, obj.get("response_a"), "response_a")
        b = _response(path, n, obj.get("response_b"), "response_b")
        label = obj.get("label")
        if label not in ("A", "B", "tie"):
            raise RlaifError(f"{_where(path, n)}: 'label' must be \"A\", \"B\" or \"tie\", got {label!r}")
        return (prompt, b, a, "chosen") if label == "B" else (prompt, a, b, "tie" if label == "tie" else "chosen")
    raise RlaifError(f"{_where(path, n)}: unknown label format; use {{prompt, chosen, rejected}} (TRL, explicit "
                     "prompt), {chosen, rejected} (TRL, implicit prompt) or {prompt, response_a, response_b, label} "
                     "(A/B)")


def feedback_kind(obj: dict) -> str | None:
    """THUMBS | RATING | RANK for a single-response feedback record; None for a preference record."""
    if "completions" in obj or "ranking" in obj:
        return RANK
    if "rating" in obj or "scale" in obj:
        return RATING
    if "completion" in obj or isinstance(obj.get("label"), bool):
        return THUMBS
    return None


_PAIR_FIELDS = ("chosen", "rejected", "response_a", "response_b")
# Fields of another form that a feedback record of each kind must not hold (a rating's 'label' has its own message)
_OTHER_FORMS = {THUMBS: _PAIR_FIELDS, RATING: _PAIR_FIELDS,
                RANK: ("completion", "label", "rating", "scale", *_PAIR_FIELDS)}


def _int_field(path, n, obj: dict, key: str, lo: int, hi: int, fix: str) -> int:
    v = obj.get(key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."  # 1e308 is a 309-digit integer
        raise RlaifError(f"{_where(path, n)}: field {key!r} must be an integer from {lo} to {hi}, got {shown}; {fix}")
    return v


def feedback_of(path, n, obj: dict) -> tuple[str, str, list[tuple[str, int]], int]:
    """(stored prompt, kind, [(completion, value)], scale) of a single-response feedback record
    (``feedback_kind(obj)`` is not None). Values: thumbs 1 up / 0 down (scale 2); rating 1..scale;
    rank 1 = best (scale: the worst rank given, at least 2)."""
    kind = feedback_kind(obj)
    for key in _OTHER_FORMS[kind]:  # a record mixing two forms would be read as one of them, the rest dropped
        if key in obj:
            raise RlaifError(f"{_where(path, n)}: a {kind} record with field {key!r}: give one form per record "
                             "(thumbs: completion + label; rating: completion + rating + scale; ranking: completions "
                             "+ ranking; pair: chosen + rejected), one record a line")
    if "prompt" not in obj:
        raise RlaifError(f"{_where(path, n)}: {kind} record needs 'prompt' (a string or a list of messages)")
    prompt = _prompt(path, n, _conv(path, n, obj["prompt"], "prompt"))
    if kind == RANK:
        comps, ranks = obj.get("completions"), obj.get("ranking")
        if not isinstance(comps, list) or not 2 <= len(comps) <= MAX_RANKED:
            raise RlaifError(f"{_where(path, n)}: field 'completions' must be a list of 2 to {MAX_RANKED} completions "
                             "to rank")
        if not isinstance(ranks, list) or len(ranks) != len(comps):
            raise RlaifError(f"{_where(path, n)}: field 'ranking' must be a list with one rank per completion "
                             f"({len(comps)}: ranking[i] is the rank of completions[i], 1 = best)")
        texts = [_response(path, n, c, f"completions[{i}]") for i, c in enumerate(comps)]
        if len({t.strip() for t in texts}) != len(texts):
            raise RlaifError(f"{_where(path, n)}: field 'completions' holds the same text twice; rank each once "
                             "(equal ranks are ties)")
        fix = "ranking[i] is the rank of completions[i], 1 = best"
        values = [_int_field(path, n, {"ranking": r}, "ranking", 1, len(comps), fix) for r in ranks]
        return prompt, RANK, list(zip(texts, values)), max(2, *values)  # the worst rank given is the scale's end
    if "completion" not in obj:
        raise RlaifError(f"{_where(path, n)}: {kind} record needs 'completion' (the response the feedback is on)")
    text = _response(path, n, obj["completion"], "completion")
    if kind == RATING:
        if "label" in obj:
            raise RlaifError(f"{_where(path, n)}: give 'rating' (with 'scale') or 'label' (thumbs), not both")
        if "rating" not in obj or "scale" not in obj:
            raise RlaifError(f"{_where(path, n)}: a rating record needs both 'rating' and 'scale' "
                             "(e.g. \"rating\": 4, \"scale\": 5)")
        scale = _int_field(path, n, obj, "scale", 2, MAX_SCALE, "the number of points on the rating scale")
        return prompt, RATING, [(text, _int_field(path, n, obj, "rating", 1, scale, "1 is the worst rating"))], scale
    label = obj.get("label")
    if not isinstance(label, bool):
        raise RlaifError(f"{_where(path, n)}: field 'label' must be true (thumbs up) or false (thumbs down), got "
                         f"{label!r}; or give 'rating' and 'scale'")
    return prompt, THUMBS, [(text, int(label))], 2


def trl_preference_row(prompt_text: str, chosen: str, rejected: str) -> dict[str, Any]:
    """TRL's conversational preference record (explicit prompt), as trl's DPOTrainer loads it."""
    return {"prompt": chat.messages(prompt_text),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}
