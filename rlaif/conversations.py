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

Any prompt string in HH-RLHF style (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) is read as a multi-turn
conversation. Every problem is one ``FILE:LINE: ...`` RlaifError.
"""

from __future__ import annotations

import re
from typing import Any

from rlaif import chat
from rlaif.errors import RlaifError

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
        return hh_messages(value) if is_hh(value) else [{"role": "user", "content": value.strip()}]
    if isinstance(value, list):
        return chat.check_messages(value, f"{_where(path, n)}: field {key!r}")
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
    if "prompt" in obj:
        _conv(path, n, obj["prompt"], "prompt")  # a bad prompt is named first, whatever the format
    if "chosen" in obj or "rejected" in obj:
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise RlaifError(f"{_where(path, n)}: preference record needs both 'chosen' and 'rejected'")
        if "prompt" in obj:
            prompt = _prompt(path, n, _conv(path, n, obj["prompt"], "prompt"))
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
        if "prompt" not in obj:
            raise RlaifError(f"{_where(path, n)}: A/B record needs 'prompt'")
        prompt = _prompt(path, n, _conv(path, n, obj["prompt"], "prompt"))
        a = _response(path, n, obj.get("response_a"), "response_a")
        b = _response(path, n, obj.get("response_b"), "response_b")
        label = obj.get("label")
        if label not in ("A", "B", "tie"):
            raise RlaifError(f"{_where(path, n)}: 'label' must be \"A\", \"B\" or \"tie\", got {label!r}")
        return (prompt, b, a, "chosen") if label == "B" else (prompt, a, b, "tie" if label == "tie" else "chosen")
    raise RlaifError(f"{_where(path, n)}: unknown label format; use {{prompt, chosen, rejected}} (TRL, explicit "
                     "prompt), {chosen, rejected} (TRL, implicit prompt) or {prompt, response_a, response_b, label} "
                     "(A/B)")


def trl_preference_row(prompt_text: str, chosen: str, rejected: str) -> dict[str, Any]:
    """TRL's conversational preference record (explicit prompt), as trl's DPOTrainer loads it."""
    return {"prompt": chat.messages(prompt_text),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}
